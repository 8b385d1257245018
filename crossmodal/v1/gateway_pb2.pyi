from crossmodal.v1 import types_pb2 as _types_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueryVector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("text", "image", "vector", "like_id", "k", "target", "filter", "require_complete", "exact", "after", "include_video_frames")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    LIKE_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VIDEO_FRAMES_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    vector: QueryVector
    like_id: str
    k: int
    target: _types_pb2.Modality
    filter: _types_pb2.Filter
    require_complete: bool
    exact: bool
    after: _containers.RepeatedCompositeFieldContainer[_types_pb2.LogPosition]
    include_video_frames: bool
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., vector: _Optional[_Union[QueryVector, _Mapping]] = ..., like_id: _Optional[str] = ..., k: _Optional[int] = ..., target: _Optional[_Union[_types_pb2.Modality, str]] = ..., filter: _Optional[_Union[_types_pb2.Filter, _Mapping]] = ..., require_complete: _Optional[bool] = ..., exact: _Optional[bool] = ..., after: _Optional[_Iterable[_Union[_types_pb2.LogPosition, _Mapping]]] = ..., include_video_frames: _Optional[bool] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("id", "score", "modality", "metadata", "tags", "start_seconds", "end_seconds", "best_seconds")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BEST_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    modality: _types_pb2.Modality
    metadata: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    start_seconds: float
    end_seconds: float
    best_seconds: float
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., modality: _Optional[_Union[_types_pb2.Modality, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ..., best_seconds: _Optional[float] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results", "partial_shards", "model_id")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_SHARDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    partial_shards: _containers.RepeatedScalarFieldContainer[int]
    model_id: str
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., partial_shards: _Optional[_Iterable[int]] = ..., model_id: _Optional[str] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("id", "image", "text", "metadata", "tags")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: bytes
    text: str
    metadata: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., image: _Optional[bytes] = ..., text: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class IngestVideoRequest(_message.Message):
    __slots__ = ("header", "frame")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    header: VideoHeader
    frame: VideoFrame
    def __init__(self, header: _Optional[_Union[VideoHeader, _Mapping]] = ..., frame: _Optional[_Union[VideoFrame, _Mapping]] = ...) -> None: ...

class VideoHeader(_message.Message):
    __slots__ = ("id", "metadata", "tags", "duration_seconds", "sample_interval_seconds")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    metadata: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    duration_seconds: float
    sample_interval_seconds: float
    def __init__(self, id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., duration_seconds: _Optional[float] = ..., sample_interval_seconds: _Optional[float] = ...) -> None: ...

class VideoFrame(_message.Message):
    __slots__ = ("seconds", "image", "scene_change")
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SCENE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    seconds: float
    image: bytes
    scene_change: bool
    def __init__(self, seconds: _Optional[float] = ..., image: _Optional[bytes] = ..., scene_change: _Optional[bool] = ...) -> None: ...

class IngestVideoResponse(_message.Message):
    __slots__ = ("id", "frames", "shard", "positions", "replaced_frames")
    ID_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    id: str
    frames: int
    shard: int
    positions: _containers.RepeatedCompositeFieldContainer[_types_pb2.LogPosition]
    replaced_frames: int
    def __init__(self, id: _Optional[str] = ..., frames: _Optional[int] = ..., shard: _Optional[int] = ..., positions: _Optional[_Iterable[_Union[_types_pb2.LogPosition, _Mapping]]] = ..., replaced_frames: _Optional[int] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("id", "status", "shard", "failed_replicas", "position")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    FAILED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: _types_pb2.ItemStatus
    shard: int
    failed_replicas: _containers.RepeatedScalarFieldContainer[str]
    position: _types_pb2.LogPosition
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[_types_pb2.ItemStatus, _Mapping]] = ..., shard: _Optional[int] = ..., failed_replicas: _Optional[_Iterable[str]] = ..., position: _Optional[_Union[_types_pb2.LogPosition, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted", "positions")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    positions: _containers.RepeatedCompositeFieldContainer[_types_pb2.LogPosition]
    def __init__(self, deleted: _Optional[int] = ..., positions: _Optional[_Iterable[_Union[_types_pb2.LogPosition, _Mapping]]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("ids", "after")
    IDS_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    after: _containers.RepeatedCompositeFieldContainer[_types_pb2.LogPosition]
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., after: _Optional[_Iterable[_Union[_types_pb2.LogPosition, _Mapping]]] = ...) -> None: ...

class StoredItem(_message.Message):
    __slots__ = ("id", "modality", "metadata", "tags", "shard")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    id: str
    modality: _types_pb2.Modality
    metadata: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    shard: int
    def __init__(self, id: _Optional[str] = ..., modality: _Optional[_Union[_types_pb2.Modality, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., shard: _Optional[int] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("items", "missing")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[StoredItem]
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[StoredItem, _Mapping]]] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplicaStats(_message.Message):
    __slots__ = ("address", "healthy", "count", "snapshot_age_seconds", "error", "log_lag", "log_lag_seconds", "applied")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOG_LAG_FIELD_NUMBER: _ClassVar[int]
    LOG_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    address: str
    healthy: bool
    count: int
    snapshot_age_seconds: float
    error: str
    log_lag: int
    log_lag_seconds: float
    applied: _containers.RepeatedCompositeFieldContainer[_types_pb2.LogPosition]
    def __init__(self, address: _Optional[str] = ..., healthy: _Optional[bool] = ..., count: _Optional[int] = ..., snapshot_age_seconds: _Optional[float] = ..., error: _Optional[str] = ..., log_lag: _Optional[int] = ..., log_lag_seconds: _Optional[float] = ..., applied: _Optional[_Iterable[_Union[_types_pb2.LogPosition, _Mapping]]] = ...) -> None: ...

class GatewayShardStats(_message.Message):
    __slots__ = ("shard", "replicas", "count")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    shard: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStats]
    count: int
    def __init__(self, shard: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStats, _Mapping]]] = ..., count: _Optional[int] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("model_id", "dim", "shards", "total_count")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dim: int
    shards: _containers.RepeatedCompositeFieldContainer[GatewayShardStats]
    total_count: int
    def __init__(self, model_id: _Optional[str] = ..., dim: _Optional[int] = ..., shards: _Optional[_Iterable[_Union[GatewayShardStats, _Mapping]]] = ..., total_count: _Optional[int] = ...) -> None: ...
