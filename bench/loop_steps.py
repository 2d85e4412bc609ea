"""Count what a process's event loop does: iterations, callbacks run, tasks, thread hand-offs.

For benchmarks (``bench/turn_cost.py --steps``): :func:`install` patches asyncio's pure-Python
event loop before the loop is created; :meth:`LoopSteps.start` and :meth:`LoopSteps.stop`
bracket the measured part, and :meth:`LoopSteps.report` names where the callbacks came from
(the coroutine of the task a step ran, or the callback's own name). Costs some CPU; figures
taken with it are for counting, not timing.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import asyncio.events
from collections import Counter
from typing import Any


def _name(callback: Any) -> str:
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        where = getattr(code, "co_qualname", None) or type(coro).__name__
        return f"task {where}"
    if owner is not None and isinstance(owner, asyncio.Future):
        return f"future {getattr(callback, '__name__', type(callback).__name__)}"
    func = getattr(callback, "func", None)  # functools.partial
    if func is not None:
        callback = func
    name = getattr(callback, "__qualname__", None) or type(callback).__name__
    module = getattr(callback, "__module__", "") or ""
    return f"{module}.{name}" if module else name


class LoopSteps:
    def __init__(self) -> None:
        self.on = False
        self.iterations = 0
        self.callbacks: Counter[str] = Counter()
        self.tasks: Counter[str] = Counter()
        self.threadsafe: Counter[str] = Counter()

    def start(self) -> None:
        self.iterations = 0
        self.callbacks.clear()
        self.tasks.clear()
        self.threadsafe.clear()
        self.on = True

    def stop(self) -> None:
        self.on = False

    def report(self, turns: int, top: int = 30) -> str:
        per = max(1, turns)
        lines = [
            f"per turn: {self.iterations / per:.1f} loop iterations, "
            f"{sum(self.callbacks.values()) / per:.1f} callbacks run, "
            f"{sum(self.tasks.values()) / per:.1f} tasks created, "
            f"{sum(self.threadsafe.values()) / per:.1f} call_soon_threadsafe"
        ]
        lines.append("callbacks run, per turn:")
        lines += [f"  {n / per:6.2f}  {name}" for name, n in self.callbacks.most_common(top)]
        lines.append("tasks created, per turn:")
        lines += [f"  {n / per:6.2f}  {name}" for name, n in self.tasks.most_common(top)]
        lines.append("call_soon_threadsafe, per turn:")
        lines += [f"  {n / per:6.2f}  {name}" for name, n in self.threadsafe.most_common(top)]
        return "\n".join(lines)


def install() -> LoopSteps:
    """Patch asyncio (the pure-Python loop; call before ``asyncio.run``)."""
    steps = LoopSteps()
    loop_cls = asyncio.base_events.BaseEventLoop
    run_once = loop_cls._run_once  # type: ignore[attr-defined]
    create_task = loop_cls.create_task
    threadsafe = loop_cls.call_soon_threadsafe
    handle_run = asyncio.events.Handle._run

    def counted_run_once(self: Any) -> None:
        if steps.on:
            steps.iterations += 1
        run_once(self)

    def counted_create_task(self: Any, coro: Any, **kwargs: Any) -> Any:
        if steps.on:
            code = getattr(coro, "cr_code", None)
            steps.tasks[getattr(code, "co_qualname", type(coro).__name__)] += 1
        return create_task(self, coro, **kwargs)

    def counted_threadsafe(self: Any, callback: Any, *args: Any, **kwargs: Any) -> Any:
        if steps.on:
            steps.threadsafe[_name(callback)] += 1
        return threadsafe(self, callback, *args, **kwargs)

    def counted_handle_run(self: Any) -> None:
        if steps.on:
            steps.callbacks[_name(self._callback)] += 1
        handle_run(self)

    loop_cls._run_once = counted_run_once  # type: ignore[attr-defined]
    loop_cls.create_task = counted_create_task  # type: ignore[method-assign]
    loop_cls.call_soon_threadsafe = counted_threadsafe  # type: ignore[method-assign,assignment]
    asyncio.events.Handle._run = counted_handle_run  # type: ignore[method-assign]
    return steps
