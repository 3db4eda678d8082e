"""Fakes of the pipeline's I/O edges, each through the Protocol the component declares: a consumer
(`ConsumerLike`), a producer (`LetterProducer`) and Meta (`MetaSession`). They record what they are asked
and play what the test scripts; none opens a socket."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaError, TopicPartition

from stream.pipeline.meta_client import Action, Answer

TP = tuple[str, int]
DATASET_A, DATASET_B = "111", "222"  # the datasets of destinations a and b in fakes_config()


def fakes_config(topic: str, *, pipeline: str = "", batch: str = "", send: str = "") -> str:
    """The TOML of a pipeline run over these fakes: a broker nobody dials, one source topic, the given
    [pipeline], [batch] and [send] lines, the dedupe window in memory only, and two destinations:
    a (app.a -> dataset 111, token $TOK_A) and b (app.b -> dataset 222, token $TOK_B)."""
    return f"""
[kafka]
bootstrap_servers = "127.0.0.1:1"
topics = ["{topic}"]
[pipeline]
{pipeline}
[batch]
{batch}
[dedupe]
# the changelog needs a broker: its order of effects is tested in tests/integration/test_dedupe_changelog.py
changelog = false
[send]
{send}
[destinations.a]
dataset_id = "{DATASET_A}"
app_ids = ["app.a"]
token_env = "TOK_A"
[destinations.b]
dataset_id = "{DATASET_B}"
app_ids = ["app.b"]
token_env = "TOK_B"
"""


class FakeConsumer:
    """Plays the test's script from consume() (on the source thread), calling the rebalance callbacks there
    as librdkafka does, and records pauses, resumes, stored offsets, commits and the close."""

    def __init__(self) -> None:
        self.script: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.assigned: set[TP] = set()
        self.calls: list[tuple[str, list[TP]]] = []  # ("pause" | "resume", partitions)
        self.stored: list[dict[TP, int]] = []
        self.commits = 0
        self.committed: list[dict[TP, int]] = []  # explicit offsets passed to commit()
        self.closed = False
        self.callbacks: dict[str, Callable[..., None]] = {}
        self.conf: dict[str, Any] = {}

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None, on_lost: Any = None) -> None:
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        try:
            kind, arg = self.script.get(timeout=min(timeout, 0.01))
        except queue.Empty:
            return []
        if kind == "messages":
            return list(arg)
        if kind == "raise":
            raise arg
        parts = [TopicPartition(t, p) for t, p in arg]
        if kind == "assign":
            self.assigned |= set(arg)
        self.callbacks[kind](self, parts)
        if kind in ("revoke", "lost"):
            self.assigned -= set(arg)
        return []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in sorted(self.assigned)]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("pause", sorted((p.topic, p.partition) for p in partitions)))

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("resume", sorted((p.topic, p.partition) for p in partitions)))

    def store_offsets(self, *, offsets: list[TopicPartition]) -> None:
        self.stored.append({(p.topic, p.partition): p.offset for p in offsets})

    def commit(self, *, offsets: list[TopicPartition] | None = None, asynchronous: bool) -> list[TopicPartition]:
        assert asynchronous is False
        self.commits += 1
        if offsets is not None:
            self.committed.append({(p.topic, p.partition): p.offset for p in offsets})
        return []

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Records each produce; each poll delivers the waiting messages with the next scripted outcome.

    `outcomes` holds None (delivered) or a KafkaError per delivery, in order; after it runs out every
    delivery succeeds. `full` makes that many produce() calls raise BufferError first (queue full).
    """

    def __init__(self, outcomes: list[KafkaError | None] | None = None, full: int = 0) -> None:
        self.outcomes = list(outcomes or [])
        self.full = full
        self.produced: list[dict[str, Any]] = []
        self.waiting: list[Callable[[KafkaError | None, Any], None]] = []
        self.polls = 0
        self.held = False  # True: polls deliver nothing until it is cleared
        self.conf: dict[str, Any] = {}

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                headers: list[tuple[str, str | bytes | None]] | None = None,
                on_delivery: Callable[[KafkaError | None, Any], None] | None = None) -> None:  # fmt: skip
        if self.full:
            self.full -= 1
            raise BufferError("Local: Queue full")
        self.produced.append({"topic": topic, "value": value, "key": key, "headers": dict(headers or [])})
        assert on_delivery is not None
        self.waiting.append(on_delivery)

    def poll(self, timeout: float) -> int:
        self.polls += 1
        if self.held:
            return 0
        served, self.waiting = self.waiting, []
        for callback in served:
            callback(self.outcomes.pop(0) if self.outcomes else None, None)
        return len(served)


Decide = Callable[[str, list[str], int], Answer]  # (dataset id, event ids, events) -> answer


def ack(_dataset: str, _ids: list[str], events: int) -> Answer:
    """Meta's acknowledgement of every event of a request."""
    return Answer(Action.ACKED, 200, events_received=events)


class FakeMeta:
    """A MetaSession: answers each request with `decide(dataset, event_ids, events)`, records it, and
    holds every answer while `gate` is cleared (a request in flight)."""

    def __init__(self, decide: Decide = ack) -> None:
        self.decide = decide
        self.requests: list[tuple[str, list[str]]] = []  # dataset id, event ids
        self.reads: list[str] = []  # dataset ids read (probes)
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def post(self, url: str, body: bytes, events: int) -> Answer:
        dataset = url.rstrip("/").split("/")[-2]
        ids = [e["event_id"] for e in orjson.loads(body)["data"]]
        self.requests.append((dataset, ids))
        await self.gate.wait()
        return self.decide(dataset, ids, events)

    async def get(self, url: str, token: str, object_id: str) -> Answer:
        """A read of a dataset (the probe of a halted destination): acknowledged, recorded with no event ids."""
        self.reads.append(object_id)
        await self.gate.wait()
        return Answer(Action.ACKED, 200)

    def sent(self) -> list[str]:
        """Every event id in every request, in order."""
        return [i for _, ids in self.requests for i in ids]


class _FakePartition:
    def __init__(self, leader: int) -> None:
        self.leader = leader


class _FakeTopic:
    def __init__(self, partitions: int, leader: int) -> None:
        self.partitions = {p: _FakePartition(leader) for p in range(partitions)}
        self.error = None


class _FakeMetadata:
    def __init__(self, topics: dict[str, _FakeTopic]) -> None:
        self.topics = topics


class FreshBrokerAdmin:
    """An AdminClient of a broker that knows a topic as soon as it created it but elects its partitions'
    leaders only `elected_after` metadata reads later (a fresh broker, or any broker under load)."""

    def __init__(self, existing: dict[str, int] | None = None, elected_after: int = 3) -> None:
        self.elected_after = elected_after
        self.topics = dict(existing or {})  # name -> partitions
        self.created: list[str] = []
        self.reads_after_create = 0

    def list_topics(self, timeout: float = -1) -> _FakeMetadata:
        if self.created:
            self.reads_after_create += 1
        elected = self.reads_after_create > self.elected_after
        return _FakeMetadata({name: _FakeTopic(n, 1 if elected or name not in self.created else -1)
                              for name, n in self.topics.items()})

    def create_topics(self, new: list[Any], **_kw: Any) -> dict[str, Any]:
        import concurrent.futures

        out = {}
        for topic in new:
            self.topics[topic.topic] = topic.num_partitions
            self.created.append(topic.topic)
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            done.set_result(None)
            out[topic.topic] = done
        return out

    def leaders(self) -> bool:
        """Whether the created topics' leaders are elected by now."""
        return self.reads_after_create > self.elected_after
