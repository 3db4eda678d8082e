"""A local Meta Conversions API: validates like Meta, answers like Meta, misbehaves on demand.

`Emulator` (async) and `EmulatorThread` (for synchronous code) serve it; `FaultSpec` describes the
faults. Pure parts: `rules` (validation), `errors` (Meta's answers), `tokens`, `faults`, `state`, `page`.
"""

from stream.emulator.faults import FaultKind, FaultSpec, FaultSpecError
from stream.emulator.server import Emulator, EmulatorError, EmulatorThread

__all__ = ["Emulator", "EmulatorError", "EmulatorThread", "FaultKind", "FaultSpec", "FaultSpecError"]
