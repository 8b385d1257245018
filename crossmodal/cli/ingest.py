"""`crossmodal ingest`: stream folders of images, sounds and videos, and JSONL files into the gateway, resumably."""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from tqdm import tqdm

from crossmodal.bundle.audio import AudioInputError
from crossmodal.cli._common import AUDIO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES, add_connection_args, connect
from crossmodal.client import Ack, AudioAck, Client, IngestJournal, Item, VideoAck
from crossmodal.video import VideoError, VideoOptions

# Files sent in a stream of their own (decoded here, as they are sent), by kind.
TIMED_SUFFIXES = {**dict.fromkeys(VIDEO_SUFFIXES, "video"), **dict.fromkeys(AUDIO_SUFFIXES, "audio")}


@dataclass(frozen=True)
class Source:
    """An item to send, read lazily; or a video or sound file (`kind`), decoded as it is sent."""

    id: str
    load: Callable[[], Item]
    video: Path | None = None
    kind: str = ""


def _timed_source(item_id: str, path: Path) -> Source:
    kind = TIMED_SUFFIXES[path.suffix.lower()]

    def not_an_item() -> Item:
        raise TypeError(f"{path} is a {kind} file: it is streamed with Client.ingest_{kind}_file, not as an item")

    return Source(item_id, not_an_item, path.resolve(), kind)


def _metadata(record: dict[str, Any]) -> dict[str, str]:
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (record.get("metadata") or {}).items()}


def _image_item(item_id: str, path: Path) -> Item:
    return Item.from_image_file(item_id, path, {"path": str(path.resolve())})


def discover(paths: Sequence[Path]) -> list[Source]:
    """Every item under `paths`: image, sound and video files found recursively, and the records of .jsonl files.

    A JSONL record holds `id`, and `text`, or `path` (an image, relative to the file) with an optional
    `caption`, which becomes a text item `<id>#caption`; `metadata` and `tags` are optional.
    """
    sources: list[Source] = []
    for root in paths:
        if root.is_dir():
            wanted = IMAGE_SUFFIXES | TIMED_SUFFIXES.keys()
            for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in wanted and p.is_file()):
                rel = path.relative_to(root).as_posix()
                if path.suffix.lower() in TIMED_SUFFIXES:
                    sources.append(_timed_source(rel, path))
                else:
                    sources.append(Source(rel, functools.partial(_image_item, rel, path)))
        elif root.suffix == ".jsonl":
            for number, line in enumerate(root.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SystemExit(f"{root}:{number}: not JSON: {exc}") from None
                sources.extend(_from_record(root, number, record))
        elif root.suffix.lower() in IMAGE_SUFFIXES and root.is_file():
            sources.append(Source(root.name, functools.partial(_image_item, root.name, root)))
        elif root.suffix.lower() in TIMED_SUFFIXES and root.is_file():
            sources.append(_timed_source(root.name, root))
        else:
            raise SystemExit(f"{root}: not a folder, a .jsonl file, an image, a sound or a video")
    return sources


def _from_record(root: Path, number: int, record: dict[str, Any]) -> list[Source]:
    item_id = str(record.get("id") or record.get("path") or "")
    if not item_id:
        raise SystemExit(f"{root}:{number}: a record needs an `id` (or a `path`)")
    meta = _metadata(record)
    tags = tuple(str(t) for t in record.get("tags") or ())
    out: list[Source] = []
    if "path" in record:
        image = (root.parent / record["path"]).resolve()
        caption = record.get("caption")
        image_meta = {**meta, "path": str(image), **({"caption": caption} if caption else {})}
        out.append(Source(item_id, lambda: Item.from_image_file(item_id, image, image_meta, tags)))
        if caption:
            text_meta = {**meta, "text": caption, "image_id": item_id}
            out.append(
                Source(
                    f"{item_id}#caption",
                    lambda: Item(f"{item_id}#caption", text=caption, metadata=text_meta, tags=tags),
                )
            )
    elif "text" in record:
        text = str(record["text"])
        out.append(Source(item_id, lambda: Item(item_id, text=text, metadata={**meta, "text": text}, tags=tags)))
    else:
        raise SystemExit(f"{root}:{number}: a record needs `text` or `path`")
    return out


def default_state_file(address: str, paths: Sequence[Path]) -> Path:
    """Where acknowledged ids are remembered for this gateway and these inputs."""
    key = hashlib.sha256("\n".join([address, *sorted(str(p.resolve()) for p in paths)]).encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "crossmodal" / "ingest" / f"{key}.acked"


def run_ingest(
    client: Client,
    sources: Sequence[Source],
    state_file: Path,
    *,
    progress: bool = True,
    out: Any = sys.stderr,
    video_options: VideoOptions | None = None,
) -> tuple[int, int, Counter[str]]:
    """Send what is not yet acknowledged; returns (sent, acknowledged, failure reasons).

    `state_file` is an IngestJournal: each OK acknowledgement is appended as it arrives, so a run that
    is interrupted (Ctrl-C, the client or the gateway killed) resumes by sending only the rest. Images
    and texts go in one stream; then each sound and video is decoded and sent in a call of its own, and
    one that fails (a damaged file, a limit) is counted with its reason while the others go on.
    """
    journal = IngestJournal(state_file)
    videos = [s for s in sources if s.video is not None and s.id not in journal]
    todo = [s for s in sources if s.video is None and s.id not in journal]
    if len(todo) + len(videos) < len(sources):
        done = len(sources) - len(todo) - len(videos)
        print(f"resuming: {done} of {len(sources)} items already acknowledged", file=out)
    failures: Counter[str] = Counter()
    acked = 0

    def items() -> Iterator[Item]:
        for source in todo:
            try:
                yield source.load()
            except OSError as exc:
                failures[f"unreadable file: {exc.strerror}"] += 1
                bar.update(1)

    bar = tqdm(total=len(todo), unit="item", disable=not progress, file=out, dynamic_ncols=True)
    with journal:
        for ack in client.ingest_resumable(items(), journal):
            bar.update(1)
            if ack.ok:
                acked += 1
            else:
                failures[f"{ack.code.name}: {ack.message}"] += 1
        bar.close()
        acked += _ingest_timed(client, videos, journal, video_options or VideoOptions(), failures, progress, out)
    wait_searchable(client, out=out)
    return len(todo) + len(videos), acked, failures


def _ingest_timed(
    client: Client,
    files: Sequence[Source],
    journal: IngestJournal,
    options: VideoOptions,
    failures: Counter[str],
    progress: bool,
    out: Any,
) -> int:
    """Decode and store each video and sound in turn; returns how many were stored."""
    stored = 0
    bar = tqdm(total=len(files), unit="file", disable=not progress or not files, file=out, dynamic_ncols=True)
    for source in files:
        assert source.video is not None
        bar.set_postfix_str(source.id[-40:])
        ack: AudioAck | VideoAck
        try:
            if source.kind == "audio":
                ack = client.ingest_audio_file(source.id, source.video, max_seconds=options.max_seconds)
            else:
                ack = client.ingest_video_file(source.id, source.video, options=options)
        except VideoError as exc:
            failures[f"{exc.code.name} ({exc.reason}): {exc.message}"] += 1
        except AudioInputError as exc:
            failures[f"INVALID_ARGUMENT ({exc.kind}): {source.id}: {exc.reason}"] += 1
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise  # the gateway went away: stop, a rerun resumes from here
            failures[f"{exc.code().name}: {source.id}: {exc.details()}"] += 1
        except OSError as exc:
            failures[f"unreadable file: {exc.strerror}"] += 1
        else:
            stored += 1
            journal.record(Ack(ack.id, True, grpc.StatusCode.OK, "", ack.shard, []))
        bar.update(1)
    bar.close()
    return stored


def wait_searchable(client: Client, timeout: float = 120.0, out: Any = sys.stderr) -> bool:
    """With a write log, wait until every replica has applied this client's writes; whether they all did.

    An acknowledged write is durable in the log at once, but each replica applies it a moment later; a
    `crossmodal search` started right after this command, or any other client, must find it whichever
    replica answers. Without a log (direct mode) an acknowledged write is already on every replica.
    """
    positions = client.positions()
    if not positions:
        return True
    deadline = time.monotonic() + timeout
    while True:
        stats = client.stats(timeout=min(30.0, timeout))
        behind = [
            r.address for rs in stats.shards.values() for r in rs if not r.healthy or not r.has_applied(positions)
        ]
        if not behind:
            return True
        if time.monotonic() > deadline:
            print(
                f"the items are stored, but replicas {', '.join(behind)} have not applied them all yet; "
                "they become searchable there as the replicas catch up",
                file=out,
            )
            return False
        time.sleep(0.1)


def _handler(args: argparse.Namespace) -> int:
    sources = discover(args.paths)
    state = args.state or default_state_file(args.address, args.paths)
    if args.restart:
        state.unlink(missing_ok=True)
    with connect(args) as client:
        try:
            options = VideoOptions(
                rate=args.video_rate, scene_threshold=args.scene_threshold, max_seconds=args.max_video_seconds
            )
            sent, acked, failures = run_ingest(client, sources, state, progress=not args.quiet, video_options=options)
        except grpc.RpcError as exc:
            print(f"ingest stopped: {exc.code().name}: {exc.details()} (run again to resume)", file=sys.stderr)
            return 1
    print(f"ingested {acked} of {sent} items sent ({len(sources)} found); state in {state}")
    if failures:
        print(f"{sum(failures.values())} items failed:")
        for reason, count in failures.most_common():
            print(f"  {count:>6}  {reason}")
        return 1
    return 0


def register(subparsers: Any) -> None:
    """Add the `ingest` subcommand."""
    parser = subparsers.add_parser(
        "ingest", help="ingest folders of images, sounds and videos, and JSONL files (resumable)"
    )
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="folders, images, sounds (wav flac mp3 ogg opus m4a), videos (mp4 mov mkv webm) or .jsonl files",
    )
    defaults = VideoOptions()
    parser.add_argument(
        "--video-rate", type=float, default=defaults.rate, help="video frames sampled per second (default 1)"
    )
    parser.add_argument(
        "--scene-threshold",
        type=float,
        default=defaults.scene_threshold,
        help=f"grey-level change (0-1) that adds a scene-change frame; 0: none (default {defaults.scene_threshold})",
    )
    parser.add_argument(
        "--max-video-seconds",
        type=float,
        default=defaults.max_seconds,
        help=f"refuse longer videos and sounds (default {defaults.max_seconds:g}; the gateway has its own limit too)",
    )
    parser.add_argument("--state", type=Path, help="file of acknowledged ids (default: under ~/.cache/crossmodal)")
    parser.add_argument("--restart", action="store_true", help="forget earlier progress and send everything")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_connection_args(parser)
    parser.set_defaults(func=_handler)
