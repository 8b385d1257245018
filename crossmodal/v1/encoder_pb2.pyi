from crossmodal.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncodeItem(_message.Message):
    __slots__ = ("key", "text", "image", "audio")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    key: str
    text: str
    image: bytes
    audio: bytes
    def __init__(self, key: _Optional[str] = ..., text: _Optional[str] = ..., image: _Optional[bytes] = ..., audio: _Optional[bytes] = ...) -> None: ...

class EncodeResult(_message.Message):
    __slots__ = ("key", "status", "vector", "truncated", "seconds")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    key: str
    status: _types_pb2.ItemStatus
    vector: _containers.RepeatedScalarFieldContainer[float]
    truncated: bool
    seconds: float
    def __init__(self, key: _Optional[str] = ..., status: _Optional[_Union[_types_pb2.ItemStatus, _Mapping]] = ..., vector: _Optional[_Iterable[float]] = ..., truncated: _Optional[bool] = ..., seconds: _Optional[float] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[EncodeItem]
    def __init__(self, items: _Optional[_Iterable[_Union[EncodeItem, _Mapping]]] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("model_id", "dim", "results")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dim: int
    results: _containers.RepeatedCompositeFieldContainer[EncodeResult]
    def __init__(self, model_id: _Optional[str] = ..., dim: _Optional[int] = ..., results: _Optional[_Iterable[_Union[EncodeResult, _Mapping]]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model_id", "dim", "modality", "precision", "context_length", "image_size", "max_batch", "max_request_items", "providers", "clip_seconds", "sample_rate", "window_hop_seconds")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_ITEMS_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    CLIP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_HOP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dim: int
    modality: _types_pb2.Modality
    precision: str
    context_length: int
    image_size: int
    max_batch: int
    max_request_items: int
    providers: _containers.RepeatedScalarFieldContainer[str]
    clip_seconds: float
    sample_rate: int
    window_hop_seconds: float
    def __init__(self, model_id: _Optional[str] = ..., dim: _Optional[int] = ..., modality: _Optional[_Union[_types_pb2.Modality, str]] = ..., precision: _Optional[str] = ..., context_length: _Optional[int] = ..., image_size: _Optional[int] = ..., max_batch: _Optional[int] = ..., max_request_items: _Optional[int] = ..., providers: _Optional[_Iterable[str]] = ..., clip_seconds: _Optional[float] = ..., sample_rate: _Optional[int] = ..., window_hop_seconds: _Optional[float] = ...) -> None: ...
