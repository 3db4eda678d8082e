"""The chaos suite's oracles: pure functions over what the emulator accepted, what the dead-letter topic
holds and the group's committed offsets, each returning human-readable violations (empty: all good).

Positions are (partition, offset) in the source topic; a committed offset is the next one to read, so
an occurrence at `offset` was finished by the pipeline exactly when `offset < committed[partition]`.

A snapshot is taken right after each SIGKILL (the process is dead, so its commits are final) and, for
"live" snapshots, while the pipeline runs (committed offsets read first, then the ledgers, so anything
committed was acknowledged before the ledgers were read). A live snapshot marked `loss` is taken just
before the broker goes away: the pipeline may lose its partitions and read again from those offsets.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

Key = tuple[str, str, str]  # dataset, event_name, event_id (the emulator's ledger key)
Position = tuple[int, int]  # partition, offset in the source topic

# How many offending items a message lists before it summarises the rest
SHOW = 20


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The state of the world at one instant of the run."""

    label: str  # "kill 2 (at 41% accepted)", "token halted", ...
    kill: bool  # True: taken right after a SIGKILL of the pipeline
    committed: Mapping[int, int]  # partition -> next offset to read (negative: nothing committed yet)
    accepted: Mapping[Key, int]  # the emulator's ledger: key -> times accepted
    letters: Mapping[Position, int]  # dead letters per source position
    # True: taken just before the broker went away under a live pipeline, which may lose its partitions
    # and read again from the committed offsets. Its dedupe store keeps valid events from being sent
    # again, but a bad record there may be dead-lettered again.
    loss: bool = False
    # True: taken right after a graceful membership change settled (a member joined or left). The old
    # owner finished or gave up its work on the moved partitions before they moved, but its dedupe store
    # did not move with them: the second occurrence of an event (a twin in the source stream) read by the
    # new owner may be sent again.
    handoff: bool = False

    def done(self, position: Position) -> bool:
        """True when the group had committed past `position`."""
        partition, offset = position
        return offset < max(self.committed.get(partition, -1), 0)


def _listing(lines: Sequence[str], what: str) -> list[str]:
    if not lines:
        return []
    more = f"\n  ... and {len(lines) - SHOW} more" if len(lines) > SHOW else ""
    return [f"{len(lines)} {what}:\n  " + "\n  ".join(lines[:SHOW]) + more]


def _where(key: Key, positions: Mapping[str, Sequence[Position]]) -> str:
    spots = ", ".join(f"p{p}@{o}" for p, o in positions.get(key[2], ()))
    return f"{key[1]}/{key[2]} (dataset {key[0]}) at [{spots or 'not in the source topic'}]"


def delivery_problems(expected: Iterable[Key], counts: Mapping[Key, int],
                      positions: Mapping[str, Sequence[Position]]) -> list[str]:
    """Every expected key accepted at least once, and nothing accepted that should not have been."""
    want = set(expected)
    missing = sorted(want - {k for k, c in counts.items() if c > 0})
    extra = sorted(set(counts) - want)
    return [
        *_listing([_where(k, positions) for k in missing], "valid events never accepted by Meta (lost)"),
        *_listing([f"{_where(k, positions)} x{counts[k]}" for k in extra],
                  "events accepted that are not valid, routed and consented"),
    ]


def _exposed(positions: Sequence[Position], snap: Snapshot) -> bool:
    """True when some occurrence was not committed at the snapshot: a new process may read it again."""
    return any(not snap.done(pos) for pos in positions)


def commit_problems(snapshots: Sequence[Snapshot], expected: Iterable[Key],
                    positions: Mapping[str, Sequence[Position]], bad: Mapping[Position, str]) -> list[str]:
    """At every snapshot, each committed valid event had been accepted and each committed bad record
    had been dead-lettered: commit-after-ack and commit-after-dead-letter."""
    lines = []
    for snap in snapshots:
        for key in sorted(expected):
            spots = [pos for pos in positions.get(key[2], ()) if snap.done(pos)]
            if spots and snap.accepted.get(key, 0) == 0:
                lines.append(f"[{snap.label}] {_where(key, positions)}: committed past p{spots[0][0]}@"
                             f"{spots[0][1]} (committed {dict(snap.committed)}) but never accepted")
        for pos, reason in sorted(bad.items()):
            if snap.done(pos) and snap.letters.get(pos, 0) == 0:
                lines.append(f"[{snap.label}] bad record p{pos[0]}@{pos[1]} ({reason}): committed (committed "
                             f"{dict(snap.committed)}) but not in the dead-letter topic")
    return _listing(lines, "offsets committed before their work was done")


def repeat_problems(snapshots: Sequence[Snapshot], counts: Mapping[Key, int],
                    positions: Mapping[str, Sequence[Position]]) -> list[str]:
    """Repeats only among events in flight at a kill.

    After a kill, an event all of whose occurrences were committed is never accepted again. Overall an
    event is accepted at most once plus once per kill at which it had been accepted and an occurrence of
    it was not yet committed (the next process reads it again with an empty dedupe store).
    """
    kills = [s for s in snapshots if s.kill]
    resent, unexplained = [], []
    for key, count in sorted(counts.items()):
        spots = positions.get(key[2], ())
        for snap in kills:
            before = snap.accepted.get(key, 0)
            if before and not _exposed(spots, snap) and count > before:
                resent.append(f"{_where(key, positions)}: accepted {before}x before [{snap.label}] with every "
                              f"occurrence committed ({dict(snap.committed)}), {count}x at the end")
        allowed = 1 + len(_explanations(key, snapshots, positions))
        if count > allowed:
            unexplained.append(f"{_where(key, positions)}: accepted {count}x, at most {allowed}x is explained "
                               f"by the kills ({[s.accepted.get(key, 0) for s in kills]} accepted by each kill)")
    return [*_listing(resent, "events accepted again after their offsets were committed"),
            *_listing(unexplained, "repeats not explained by events in flight at a kill or twins at a handoff")]


def _explanations(key: Key, snapshots: Sequence[Snapshot], positions: Mapping[str, Sequence[Position]]) -> list[str]:
    """Why `key` may have been accepted once more, one reason per snapshot that allows it."""
    spots = positions.get(key[2], ())
    reasons = []
    for snap in snapshots:
        if not snap.accepted.get(key, 0) or not _exposed(spots, snap):
            continue
        if snap.kill:
            reasons.append(f"in flight at {snap.label}")
        elif snap.handoff and len(spots) > 1:
            reasons.append(f"twin read by a new owner after {snap.label}")
    return reasons


def repeat_reasons(snapshots: Sequence[Snapshot], counts: Mapping[Key, int],
                   positions: Mapping[str, Sequence[Position]]) -> Counter[str]:
    """How many extra acceptances each reason explains (in snapshot order); the rest are "unexplained"."""
    out: Counter[str] = Counter()
    for key, count in counts.items():
        extra = count - 1
        if extra <= 0:
            continue
        reasons = _explanations(key, snapshots, positions)
        for reason in reasons[:extra]:
            out[reason] += 1
        if extra > len(reasons):
            out["unexplained"] += extra - len(reasons)
    return out


def letter_problems(snapshots: Sequence[Snapshot], bad: Mapping[Position, str],
                    letters: Sequence[tuple[Position, str]]) -> list[str]:
    """Every bad record dead-lettered with its reason, once, or once more per kill (or partition loss) it
    was in flight at; nothing else dead-lettered. `letters` holds one (source position, reason) per letter."""
    kills = [s for s in snapshots if s.kill]
    losses = [s for s in snapshots if s.loss]
    found: Counter[Position] = Counter(pos for pos, _ in letters)
    lines = []
    for pos, reason in letters:
        if pos not in bad:
            lines.append(f"p{pos[0]}@{pos[1]}: dead-lettered ({reason}) but it is not one of the bad records")
        elif reason != bad[pos]:
            lines.append(f"p{pos[0]}@{pos[1]}: dead-lettered as {reason}, expected {bad[pos]}")
    for pos, reason in sorted(bad.items()):
        count = found[pos]
        allowed = 1 + sum(1 for snap in kills if snap.letters.get(pos, 0) and not snap.done(pos)) + sum(
            1 for snap in losses if not snap.done(pos)  # its letter may still have been in the producer then
        )
        if count == 0:
            lines.append(f"p{pos[0]}@{pos[1]} ({reason}): never dead-lettered")
        elif count > allowed:
            lines.append(f"p{pos[0]}@{pos[1]} ({reason}): dead-lettered {count}x, at most {allowed}x is explained "
                         f"by the kills and partition losses")
        for snap in kills:
            before = snap.letters.get(pos, 0)
            if before and snap.done(pos) and count > before:
                lines.append(f"p{pos[0]}@{pos[1]} ({reason}): dead-lettered {before}x before [{snap.label}] with "
                             f"its offset committed, {count}x at the end")
    return _listing(lines, "dead-letter problems")


def offset_problems(committed: Mapping[int, int], end: Mapping[int, int]) -> list[str]:
    """The group's committed offsets are the end offsets of every partition."""
    lines = [f"partition {p}: committed {committed.get(p)} != end {e} ({e - max(committed.get(p, -1), 0)} "
             f"unfinished)" for p, e in sorted(end.items()) if max(committed.get(p, -1), 0) != e]
    return _listing(lines, "partitions not committed to their end")


def repeat_report(expected: Iterable[Key], counts: Mapping[Key, int], bad: Mapping[Position, str],
                  letters: Sequence[tuple[Position, str]]) -> str:
    """One line: how many valid events Meta accepted more than once, and bad records dead-lettered more than
    once, each as a count and a share (what the dedupe changelog exists to bring down)."""
    valid = set(expected)
    twice = sum(1 for key in valid if counts.get(key, 0) > 1)
    found = Counter(pos for pos, _ in letters)
    letters_twice = sum(1 for pos in bad if found[pos] > 1)
    return (f"accepted more than once: {twice} of {len(valid)} valid events ({twice / max(len(valid), 1):.2%}); "
            f"dead-lettered more than once: {letters_twice} of {len(bad)} bad records "
            f"({letters_twice / max(len(bad), 1):.2%})")
