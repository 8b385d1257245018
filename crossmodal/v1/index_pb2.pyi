from crossmodal.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IndexItem(_message.Message):
    __slots__ = ("id", "modality", "vector", "metadata", "tags", "version")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    modality: _types_pb2.Modality
    vector: _containers.RepeatedScalarFieldContainer[float]
    metadata: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    version: int
    def __init__(self, id: _Optional[str] = ..., modality: _Optional[_Union[_types_pb2.Modality, str]] = ..., vector: _Optional[_Iterable[float]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("item", "delete", "model_id")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    item: IndexItem
    delete: bool
    model_id: str
    def __init__(self, item: _Optional[_Union[IndexItem, _Mapping]] = ..., delete: _Optional[bool] = ..., model_id: _Optional[str] = ...) -> None: ...

class UpsertVectorsRequest(_message.Message):
    __slots__ = ("shard", "model_id", "items")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    shard: int
    model_id: str
    items: _containers.RepeatedCompositeFieldContainer[IndexItem]
    def __init__(self, shard: _Optional[int] = ..., model_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[IndexItem, _Mapping]]] = ...) -> None: ...

class UpsertVectorsResponse(_message.Message):
    __slots__ = ("statuses", "version")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedCompositeFieldContainer[_types_pb2.ItemStatus]
    version: int
    def __init__(self, statuses: _Optional[_Iterable[_Union[_types_pb2.ItemStatus, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class DeleteVectorsRequest(_message.Message):
    __slots__ = ("shard", "ids")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    shard: int
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, shard: _Optional[int] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteVectorsResponse(_message.Message):
    __slots__ = ("deleted", "version")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    version: int
    def __init__(self, deleted: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class GetVectorsRequest(_message.Message):
    __slots__ = ("shard", "ids", "include_vectors", "after", "map_version")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    shard: int
    ids: _containers.RepeatedScalarFieldContainer[str]
    include_vectors: bool
    after: _containers.RepeatedCompositeFieldContainer[_types_pb2.LogPosition]
    map_version: int
    def __init__(self, shard: _Optional[int] = ..., ids: _Optional[_Iterable[str]] = ..., include_vectors: _Optional[bool] = ..., after: _Optional[_Iterable[_Union[_types_pb2.LogPosition, _Mapping]]] = ..., map_version: _Optional[int] = ...) -> None: ...

class GetVectorsResponse(_message.Message):
    __slots__ = ("items", "missing")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[IndexItem]
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[IndexItem, _Mapping]]] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchShardRequest(_message.Message):
    __slots__ = ("shard", "vector", "k", "modality", "filter", "exact", "model_id", "include_vectors", "after", "modalities", "map_version")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    shard: int
    vector: _containers.RepeatedScalarFieldContainer[float]
    k: int
    modality: _types_pb2.Modality
    filter: _types_pb2.Filter
    exact: bool
    model_id: str
    include_vectors: bool
    after: _containers.RepeatedCompositeFieldContainer[_types_pb2.LogPosition]
    modalities: _containers.RepeatedScalarFieldContainer[_types_pb2.Modality]
    map_version: int
    def __init__(self, shard: _Optional[int] = ..., vector: _Optional[_Iterable[float]] = ..., k: _Optional[int] = ..., modality: _Optional[_Union[_types_pb2.Modality, str]] = ..., filter: _Optional[_Union[_types_pb2.Filter, _Mapping]] = ..., exact: _Optional[bool] = ..., model_id: _Optional[str] = ..., include_vectors: _Optional[bool] = ..., after: _Optional[_Iterable[_Union[_types_pb2.LogPosition, _Mapping]]] = ..., modalities: _Optional[_Iterable[_Union[_types_pb2.Modality, str]]] = ..., map_version: _Optional[int] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("id", "score", "modality", "metadata", "tags", "vector")
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
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    modality: _types_pb2.Modality
    metadata: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., modality: _Optional[_Union[_types_pb2.Modality, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., vector: _Optional[_Iterable[float]] = ...) -> None: ...

class SearchShardResponse(_message.Message):
    __slots__ = ("hits", "examined")
    HITS_FIELD_NUMBER: _ClassVar[int]
    EXAMINED_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    examined: int
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., examined: _Optional[int] = ...) -> None: ...

class SearchShardBatchRequest(_message.Message):
    __slots__ = ("searches",)
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    searches: _containers.RepeatedCompositeFieldContainer[SearchShardRequest]
    def __init__(self, searches: _Optional[_Iterable[_Union[SearchShardRequest, _Mapping]]] = ...) -> None: ...

class SearchShardBatchResult(_message.Message):
    __slots__ = ("status", "response")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    status: _types_pb2.ItemStatus
    response: SearchShardResponse
    def __init__(self, status: _Optional[_Union[_types_pb2.ItemStatus, _Mapping]] = ..., response: _Optional[_Union[SearchShardResponse, _Mapping]] = ...) -> None: ...

class SearchShardBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchShardBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SearchShardBatchResult, _Mapping]]] = ...) -> None: ...

class GetShardStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShardStats(_message.Message):
    __slots__ = ("shard", "count", "deleted", "memory_bytes", "snapshot_age_seconds", "snapshot_version", "version", "model_id", "dim", "dtype", "applied", "log_lag", "log_lag_seconds", "map_version", "partition_items")
    class PartitionItemsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    SHARD_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    LOG_LAG_FIELD_NUMBER: _ClassVar[int]
    LOG_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ITEMS_FIELD_NUMBER: _ClassVar[int]
    shard: int
    count: int
    deleted: int
    memory_bytes: int
    snapshot_age_seconds: float
    snapshot_version: int
    version: int
    model_id: str
    dim: int
    dtype: str
    applied: _containers.RepeatedCompositeFieldContainer[_types_pb2.LogPosition]
    log_lag: int
    log_lag_seconds: float
    map_version: int
    partition_items: _containers.ScalarMap[int, int]
    def __init__(self, shard: _Optional[int] = ..., count: _Optional[int] = ..., deleted: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., snapshot_age_seconds: _Optional[float] = ..., snapshot_version: _Optional[int] = ..., version: _Optional[int] = ..., model_id: _Optional[str] = ..., dim: _Optional[int] = ..., dtype: _Optional[str] = ..., applied: _Optional[_Iterable[_Union[_types_pb2.LogPosition, _Mapping]]] = ..., log_lag: _Optional[int] = ..., log_lag_seconds: _Optional[float] = ..., map_version: _Optional[int] = ..., partition_items: _Optional[_Mapping[int, int]] = ...) -> None: ...

class GetShardStatsResponse(_message.Message):
    __slots__ = ("shards",)
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    shards: _containers.RepeatedCompositeFieldContainer[ShardStats]
    def __init__(self, shards: _Optional[_Iterable[_Union[ShardStats, _Mapping]]] = ...) -> None: ...

class CreateSnapshotRequest(_message.Message):
    __slots__ = ("shard",)
    SHARD_FIELD_NUMBER: _ClassVar[int]
    shard: int
    def __init__(self, shard: _Optional[int] = ...) -> None: ...

class CreateSnapshotResponse(_message.Message):
    __slots__ = ("version", "seconds")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    version: int
    seconds: float
    def __init__(self, version: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...
