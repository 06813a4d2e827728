"""Multi-process runs on JAX's own distributed runtime (`jax.distributed`).

Every process of a run executes the same command: it reads its own contiguous share of each
split (`share`), the features of all shares are gathered in example order on every process
(`gather_rows`), and process 0 (`is_main`) alone fits the heads, scores them and touches the
run folder and the feature cache. What process 0 decides from its
disk (which cells are done, whether features are cached) reaches the others by `broadcast`,
so the processes never need a shared file system. `agree` compares the processes' commands
at start: processes that would compute different things stop, each in one line.

Sits at the data-source floor: imports only `source` (split arithmetic), `errors` and `quiet`.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading

import numpy as np

from vtabkit import source
from vtabkit.errors import UserError
from vtabkit.quiet import stderr_fd_silenced

DEFAULT_TIMEOUT_S = 300  # JAX's own default for joining the coordinator
MODES = ("auto", "on", "off")


def cluster_detected(environ: dict[str, str] | None = None) -> str | None:
    """The scheduler that started this process as one task of several (None: a lone process).

    Only schedulers whose environment says so for certain: inside a SLURM job step with more
    than one task, or an Open MPI launch of more than one rank. Cloud TPU pods are not visible
    from the environment: use ``--distributed on`` there.
    """
    environ = os.environ if environ is None else environ
    if "SLURM_STEP_ID" in environ and int(environ.get("SLURM_NTASKS", environ.get("SLURM_NPROCS", "1")) or 1) > 1:
        return "SLURM"
    if int(environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "Open MPI"
    return None


def _parse_address(address: str) -> tuple[str, int]:
    host, colon, port = address.rpartition(":")
    if not (colon and host and port.isdigit() and 0 < int(port) < 65536):
        raise UserError(f"--coordinator {address!r} is not HOST:PORT (e.g. node0:1234)")
    return host.strip("[]"), int(port)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("", port))
        except OSError:
            raise UserError(f"process 0 cannot serve the coordinator on port {port}: it is in use on this "
                            "host; give --coordinator another port") from None


def initialize(*, coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, mode: str = "auto", timeout_s: int = DEFAULT_TIMEOUT_S) -> bool:
    """Join the run's processes (`jax.distributed.initialize`); True when this is a multi-process run.

    ``mode``: ``auto`` joins when the three explicit values are given or `cluster_detected`
    names a scheduler, ``on`` lets JAX detect the cluster (SLURM, Open MPI, Cloud TPU), ``off``
    never joins. A process that has not joined all others within ``timeout_s`` seconds stops
    with one line (exit code 2) instead of JAX's fatal-error trace.
    """
    explicit = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    given = [flag for flag, value in explicit.items() if value is not None]
    if mode not in MODES:
        raise UserError(f"--distributed {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "off":
        if given:
            raise UserError(f"{', '.join(given)} given with --distributed off; drop one or the other")
        return False
    if given and len(given) < 3:
        missing = [flag for flag in explicit if flag not in given]
        raise UserError(f"a multi-process run needs --coordinator, --num-processes and --process-id; "
                        f"{', '.join(missing)} missing")
    if timeout_s < 1:
        raise UserError("--distributed-timeout must be a positive number of seconds")
    if not given and mode == "auto" and cluster_detected() is None:
        return False
    host = port = None
    if given:
        host, port = _parse_address(coordinator)
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise UserError(f"--process-id {process_id} must be in 0..{num_processes - 1} "
                            f"(--num-processes {num_processes})")
        if process_id == 0:
            _check_port_free(port)
    import jax

    try:  # CPU collectives between processes (older JAX releases had none by default)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):
        pass
    where = f"the coordinator {coordinator}" if given else "the coordinator JAX detected"
    terminal = os.dup(2)  # the watchdog speaks here while fd 2 is silenced
    watchdog = threading.Timer(timeout_s, _give_up, args=(where, host, port, process_id, timeout_s, terminal))
    watchdog.daemon = True
    watchdog.start()
    try:
        # The coordination service's start-up log lines; a failure becomes our one line below.
        with stderr_fd_silenced(replay_on_error=False):
            # JAX's own deadline a little later than ours: when it passes JAX aborts the process
            # with a stack trace, so the watchdog speaks first.
            jax.distributed.initialize(coordinator, num_processes, process_id,
                                       initialization_timeout=timeout_s + 30)
    except (RuntimeError, ValueError) as error:  # e.g. no cluster detected with --distributed on
        raise UserError(f"cannot start the multi-process run: {source.first_line(error)}") from None
    finally:
        watchdog.cancel()
        os.close(terminal)
    if jax.process_count() == 1:
        return False
    _keep_native_code_off_stdout()
    return True


def _keep_native_code_off_stdout() -> None:
    """Point fd 1 at /dev/null for the rest of the process and give Python's ``sys.stdout`` a
    private duplicate of the terminal.

    gloo announces each communicator it connects ("1 is connected to 1 peer ranks ...") on
    fd 1, from whichever thread finishes the connection and not always inside the collective
    that asked for it, so silencing fd 1 around each collective let a line through now and
    then. vtabkit's own output goes through ``sys.stdout`` and is unaffected.
    """
    try:
        sys.stdout.flush()
        private = os.dup(1)
    except (OSError, ValueError):  # no real fd 1 (e.g. captured): nothing native can reach it either
        return
    sys.stdout = os.fdopen(private, "w", buffering=1, encoding=sys.stdout.encoding or "utf-8",
                           errors=getattr(sys.stdout, "errors", None) or "strict")
    sink = os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 1)
    os.close(sink)


def _give_up(where: str, host: str | None, port: int | None, process_id: int | None, timeout_s: int,
             terminal: int) -> None:
    """The watchdog: one line and exit code 2 (JAX would abort with a C++ trace a little later)."""
    if host is not None and process_id != 0 and not _reachable(host, port):
        problem = (f"cannot reach {where} within {timeout_s} s; start process 0 there first and check the "
                   "host name and that the port is open between the hosts")
    else:
        problem = (f"not every process joined {where} within {timeout_s} s; start all of them with the same "
                   "--coordinator and --num-processes, or raise --distributed-timeout")
    sys.stdout.flush()
    os.write(terminal, f"vtabkit: error: {problem}\n".encode())
    os._exit(2)


def process_count() -> int:
    """Processes of this run (1 unless `initialize` joined several)."""
    import jax

    return jax.process_count()


def process_index() -> int:
    import jax

    return jax.process_index()


def is_main() -> bool:
    """Whether this process writes: records, predictions and the cache (process 0)."""
    return process_index() == 0


def share(split: str, sizes: dict[str, int], index: int, count: int) -> tuple[str | None, int, int]:
    """Process ``index`` of ``count``'s part of the TFDS split string ``split``.

    The split's examples (in their read order) are cut into ``count`` contiguous runs that
    differ in length by at most one; returns ``(split string of this run or None when empty,
    start, end)``, positions counted in the whole split. Concatenated in process order, the
    parts read exactly the split's examples, each once.
    """
    ranges = source.absolute_ranges(split, sizes)
    total = sum(end - begin for _, begin, end in ranges)
    start, end = index * total // count, (index + 1) * total // count
    parts, offset = [], 0
    for name, begin, stop in ranges:  # intersect [start, end) with each range's positions
        low, high = max(start, offset), min(end, offset + stop - begin)
        if low < high:
            parts.append(f"{name}[{begin + low - offset}:{begin + high - offset}]")
        offset += stop - begin
    return ("+".join(parts) or None), start, end


def _allgather(array: np.ndarray) -> np.ndarray:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array))


def broadcast(array: np.ndarray) -> np.ndarray:
    """Process 0's ``array`` on every process (the others pass one of the same shape and dtype)."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(array))


def broadcast_array(array: np.ndarray | None, dtype=np.float32) -> np.ndarray:
    """Process 0's 2-D ``array`` on every process; the others pass None (shape sent first)."""
    shape = broadcast(np.array(array.shape if array is not None else (0, 0), np.int32))
    local = array.astype(dtype) if array is not None else np.zeros(tuple(shape), dtype)
    return broadcast(local)


def gather_rows(local: np.ndarray) -> np.ndarray:
    """Every process's 2-D float32 ``local`` rows, concatenated in process order, on every process.

    Shares differ in length (and an empty share has no width), so lengths go first and the
    rows travel padded to the longest share.
    """
    local = np.asarray(local, np.float32).reshape(len(local), -1) if len(local) else np.zeros((0, 0), np.float32)
    shapes = _allgather(np.array(local.shape, np.int32))
    rows, width = int(shapes[:, 0].max()), int(shapes[:, 1].max())
    if len(set(int(w) for n, w in shapes if n)) > 1:
        raise UserError(f"the processes' features have different widths {sorted(set(shapes[:, 1].tolist()))}; "
                        "run the same model on every process")
    padded = np.zeros((rows, width), np.float32)
    padded[:len(local), :local.shape[1]] = local
    gathered = _allgather(padded)
    return np.concatenate([gathered[i, :int(n)] for i, (n, _) in enumerate(shapes)])


def _digest(value: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(value).encode()).digest()[:4], "little", signed=True)


def agree(facts: dict[str, object], problem: UserError | None = None) -> None:
    """Stop every process, in one line each, when any process failed its checks (``problem``)
    or sees other ``facts`` (command fields by name) than process 0.

    Every process must call this at the same point with the same field names.
    """
    names = sorted(facts)
    row = np.array([1 if problem else 0] + [_digest(facts[name]) for name in names], np.int32)
    table = _allgather(row)
    me = process_index()
    if problem is not None:
        raise problem
    failed = [index for index in range(len(table)) if table[index, 0]]
    if failed:
        raise UserError(f"process {failed[0]} stopped before the run started (see its error); this process "
                        f"{me} stops too")
    for index in range(1, len(table)):
        differ = [name for position, name in enumerate(names) if table[index, position + 1] != table[0, position + 1]]
        if differ:
            subject = "this process" if index == me else f"process {index}"
            raise UserError(f"{subject} runs another command than process 0 (differs in: {', '.join(differ)}); "
                            "start every process with the same command — only --process-id, --out, --data-dir "
                            "and --cache-dir may differ")

