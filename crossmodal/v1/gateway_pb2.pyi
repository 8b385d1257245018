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
    __slots__ = ("text", "image", "vector", "like_id", "audio", "k", "target", "filter", "require_complete", "exact", "after", "include_video_frames")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    LIKE_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
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
    audio: bytes
    k: int
    target: _types_pb2.Modality
    filter: _types_pb2.Filter
    require_complete: bool
    exact: bool
    after: _containers.RepeatedCompositeFieldContainer[_types_pb2.LogPosition]
    include_video_frames: bool
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., vector: _Optional[_Union[QueryVector, _Mapping]] = ..., like_id: _Optional[str] = ..., audio: _Optional[bytes] = ..., k: _Optional[int] = ..., target: _Optional[_Union[_types_pb2.Modality, str]] = ..., filter: _Optional[_Union[_types_pb2.Filter, _Mapping]] = ..., require_complete: _Optional[bool] = ..., exact: _Optional[bool] = ..., after: _Optional[_Iterable[_Union[_types_pb2.LogPosition, _Mapping]]] = ..., include_video_frames: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("results", "partial_shards", "model_id", "query_truncated")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_SHARDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    partial_shards: _containers.RepeatedScalarFieldContainer[int]
    model_id: str
    query_truncated: bool
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., partial_shards: _Optional[_Iterable[int]] = ..., model_id: _Optional[str] = ..., query_truncated: _Optional[bool] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("id", "image", "text", "audio", "metadata", "tags")
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
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: bytes
    text: str
    audio: bytes
    metadata: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., image: _Optional[bytes] = ..., text: _Optional[str] = ..., audio: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class IngestVideoRequest(_message.Message):
    __slots__ = ("header", "frame", "audio")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    header: VideoHeader
    frame: VideoFrame
    audio: AudioChunk
    def __init__(self, header: _Optional[_Union[VideoHeader, _Mapping]] = ..., frame: _Optional[_Union[VideoFrame, _Mapping]] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ...) -> None: ...

class VideoHeader(_message.Message):
    __slots__ = ("id", "metadata", "tags", "duration_seconds", "sample_interval_seconds", "audio_sample_rate")
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
    AUDIO_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    id: str
    metadata: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    duration_seconds: float
    sample_interval_seconds: float
    audio_sample_rate: int
    def __init__(self, id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., duration_seconds: _Optional[float] = ..., sample_interval_seconds: _Optional[float] = ..., audio_sample_rate: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("id", "frames", "shard", "positions", "replaced_frames", "audio_windows", "replaced_audio_windows")
    ID_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    REPLACED_AUDIO_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    id: str
    frames: int
    shard: int
    positions: _containers.RepeatedCompositeFieldContainer[_types_pb2.LogPosition]
    replaced_frames: int
    audio_windows: int
    replaced_audio_windows: int
    def __init__(self, id: _Optional[str] = ..., frames: _Optional[int] = ..., shard: _Optional[int] = ..., positions: _Optional[_Iterable[_Union[_types_pb2.LogPosition, _Mapping]]] = ..., replaced_frames: _Optional[int] = ..., audio_windows: _Optional[int] = ..., replaced_audio_windows: _Optional[int] = ...) -> None: ...

class IngestAudioRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: AudioHeader
    chunk: AudioChunk
    def __init__(self, header: _Optional[_Union[AudioHeader, _Mapping]] = ..., chunk: _Optional[_Union[AudioChunk, _Mapping]] = ...) -> None: ...

class AudioHeader(_message.Message):
    __slots__ = ("id", "metadata", "tags", "sample_rate", "duration_seconds")
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
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    metadata: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    sample_rate: int
    duration_seconds: float
    def __init__(self, id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., sample_rate: _Optional[int] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("pcm", "first_sample")
    PCM_FIELD_NUMBER: _ClassVar[int]
    FIRST_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    pcm: bytes
    first_sample: int
    def __init__(self, pcm: _Optional[bytes] = ..., first_sample: _Optional[int] = ...) -> None: ...

class IngestAudioResponse(_message.Message):
    __slots__ = ("id", "windows", "shard", "positions", "replaced_windows", "duration_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    REPLACED_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    windows: int
    shard: int
    positions: _containers.RepeatedCompositeFieldContainer[_types_pb2.LogPosition]
    replaced_windows: int
    duration_seconds: float
    def __init__(self, id: _Optional[str] = ..., windows: _Optional[int] = ..., shard: _Optional[int] = ..., positions: _Optional[_Iterable[_Union[_types_pb2.LogPosition, _Mapping]]] = ..., replaced_windows: _Optional[int] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

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
    __slots__ = ("model_id", "dim", "shards", "total_count", "audio_sample_rate", "audio_clip_seconds")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CLIP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dim: int
    shards: _containers.RepeatedCompositeFieldContainer[GatewayShardStats]
    total_count: int
    audio_sample_rate: int
    audio_clip_seconds: float
    def __init__(self, model_id: _Optional[str] = ..., dim: _Optional[int] = ..., shards: _Optional[_Iterable[_Union[GatewayShardStats, _Mapping]]] = ..., total_count: _Optional[int] = ..., audio_sample_rate: _Optional[int] = ..., audio_clip_seconds: _Optional[float] = ...) -> None: ...

class ReshardRequest(_message.Message):
    __slots__ = ("shards", "dry_run")
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    shards: int
    dry_run: bool
    def __init__(self, shards: _Optional[int] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ReshardShardPlan(_message.Message):
    __slots__ = ("shard", "partitions_before", "partitions_after", "items_before", "items_incoming", "items_outgoing")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_AFTER_FIELD_NUMBER: _ClassVar[int]
    ITEMS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_INCOMING_FIELD_NUMBER: _ClassVar[int]
    ITEMS_OUTGOING_FIELD_NUMBER: _ClassVar[int]
    shard: int
    partitions_before: int
    partitions_after: int
    items_before: int
    items_incoming: int
    items_outgoing: int
    def __init__(self, shard: _Optional[int] = ..., partitions_before: _Optional[int] = ..., partitions_after: _Optional[int] = ..., items_before: _Optional[int] = ..., items_incoming: _Optional[int] = ..., items_outgoing: _Optional[int] = ...) -> None: ...

class ReshardProgress(_message.Message):
    __slots__ = ("phase", "map_version", "partitions_moving", "partitions_caught_up", "items_copied", "lag", "message", "plan", "shards")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_MOVING_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    ITEMS_COPIED_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    phase: str
    map_version: int
    partitions_moving: int
    partitions_caught_up: int
    items_copied: int
    lag: int
    message: str
    plan: _containers.RepeatedCompositeFieldContainer[ReshardShardPlan]
    shards: int
    def __init__(self, phase: _Optional[str] = ..., map_version: _Optional[int] = ..., partitions_moving: _Optional[int] = ..., partitions_caught_up: _Optional[int] = ..., items_copied: _Optional[int] = ..., lag: _Optional[int] = ..., message: _Optional[str] = ..., plan: _Optional[_Iterable[_Union[ReshardShardPlan, _Mapping]]] = ..., shards: _Optional[int] = ...) -> None: ...
