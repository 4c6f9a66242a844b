"""yrmpi.ray: Ray's documented examples run under real Ray and under yrmpi.ray with only the
import line changed, and print the same; plus the mapping of Ray's options and errors.

Each example in tests/jobs/ray_examples is one source: the Ray side runs it as written (`python
example.py`, its `ray.init(num_cpus=8)` starts a local Ray), the yrmpi side runs a copy whose
`import ray` reads `import yrmpi.ray as ray` under `python -m yrmpi`. The Ray runs (about 10 s
each, mostly Ray's start) go one after another on a background thread while the yrmpi runs go
on, so the file takes about as long as the Ray side alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "tests" / "jobs" / "ray_examples"
COMPARED = ["tree_of_actors", "parameter_server", "actor_pool", "fault_tolerance", "named_actor", "semantics",
            "async_actor", "task_retries", "kill_restart"]
UNORDERED: set[str] = set()  # examples whose line order is not defined (compared sorted)
TIMEOUT_S = 180

try:
    import ray as _real_ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env["RAY_DEDUP_LOGS"] = "0"
    env.pop("YRMPI_NUM_RANKS", None)
    return env


def _lines(text: str) -> list[str]:
    """The program's own output: Ray's log lines on stdout ("(raylet) ...", "(Actor pid=...)") dropped,
    with the remote traceback that follows a "(raylet) Task f failed ... User exception:" line (a
    retried task's): "ray::f() (pid=...)", indented frames, and the exception's line last."""
    out = []
    in_traceback = False
    for line in text.splitlines():
        plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
        if in_traceback:
            in_traceback = plain.startswith((" ", "ray::"))
            continue
        if not plain.strip() or re.match(r"^\((raylet|\w+ pid=\d+)", plain):
            in_traceback = plain.rstrip().endswith("User exception:")
            continue
        out.append(plain)
    return out


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)


_ray_results: dict[str, Future] = {}


def _start_ray_runs() -> None:
    """Run every compared example under real Ray, one after another, on a background thread."""
    if _ray_results or not HAVE_RAY:
        return
    for name in COMPARED:
        _ray_results[name] = Future()

    def work() -> None:
        for name in COMPARED:
            try:
                _ray_results[name].set_result(_run([sys.executable, str(EXAMPLES / f"{name}.py")], EXAMPLES))
            except BaseException as exc:  # (a timeout: reported by that example's test)
                _ray_results[name].set_exception(exc)

    threading.Thread(target=work, daemon=True, name="ray examples").start()


def swapped(name: str, folder: Path) -> Path:
    """The example with its import line changed, and nothing else."""
    source = (EXAMPLES / f"{name}.py").read_text()
    changed = re.sub(r"^import ray$", "import yrmpi.ray as ray", source, count=1, flags=re.MULTILINE)
    assert changed != source, f"{name}.py has no line 'import ray'"
    target = folder / f"{name}.py"
    target.write_text(changed)
    return target


def _yrmpi_run(path: Path) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "yrmpi", str(path)], path.parent)


@pytest.mark.parametrize("name", COMPARED)
def test_example_prints_the_same_under_ray_and_yrmpi(name: str, tmp_path: Path) -> None:
    _start_ray_runs()
    mine = _yrmpi_run(swapped(name, tmp_path))
    assert mine.returncode == 0, f"yrmpi.ray run of {name} failed:\n{mine.stdout}\n{mine.stderr}"
    got = _lines(mine.stdout)
    assert got, f"{name} printed nothing under yrmpi.ray:\n{mine.stderr}"
    if not HAVE_RAY:
        pytest.skip("ray is not installed (pip install -e '.[ray]'): only the yrmpi.ray side ran")
    theirs = _ray_results[name].result(timeout=TIMEOUT_S * len(COMPARED))
    assert theirs.returncode == 0, f"Ray run of {name} failed:\n{theirs.stdout}\n{theirs.stderr[-3000:]}"
    expected = _lines(theirs.stdout)
    if name in UNORDERED:
        got, expected = sorted(got), sorted(expected)
    assert got == expected, f"{name}: yrmpi.ray printed\n" + "\n".join(got) + "\nRay printed\n" + "\n".join(expected)


def test_a_group_of_ray_actors_uses_yr_collective_and_yrmpi_torch() -> None:
    res = _yrmpi_run(EXAMPLES / "collective_group.py")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "collective: [(0, [1.0, 1.0, 1.0, 1.0]), (1, [1.0, 1.0, 1.0, 1.0]), (2, [1.0, 1.0, 1.0, 1.0])]" \
        in res.stdout, res.stdout
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    assert "torch: [3.0, 3.0, 3.0]" in res.stdout, res.stdout + res.stderr


# -- the mapping, without MPI ------------------------------------------------------------------
def test_options_map_onto_invoke_options() -> None:
    from yrmpi.ray import _options

    task = _options.to_invoke_options({}, actor=False)
    assert (task.cpu, task.memory, task.retry_times) == (1000, 0, 3)  # Ray: a task holds 1 CPU, 3 retries
    actor = _options.to_invoke_options({"num_cpus": 2, "num_gpus": 1, "memory": 3 * 2**20, "resources": {"x": 2},
                                        "name": "a", "lifetime": "detached", "get_if_exists": True,
                                        "max_restarts": 3, "max_concurrency": 8,
                                        "scheduling_strategy": "SPREAD"}, actor=True, namespace="ns")
    assert (actor.cpu, actor.memory, actor.custom_resources) == (2000, 3, {"x": 2.0, "gpu": 1.0})
    assert (actor.name, actor.namespace, actor.get_if_exists, actor.detached) == ("a", "ns", True, True)
    assert (actor.recover_retry_times, actor.concurrency) == (3, 8)
    assert actor.custom_extensions["placement"] == "spread"
    assert actor.custom_extensions["async_limit"] == "8"  # async actors: calls running at once
    assert _options.to_invoke_options({}, actor=True).custom_extensions["async_limit"] == "1000"  # Ray's default
    assert _options.to_invoke_options({}, actor=True).cpu == 0  # Ray: an actor holds no CPU while it runs
    assert _options.to_invoke_options({"max_restarts": -1}, actor=True).recover_retry_times > 1000
    retried = _options.to_invoke_options({"max_retries": 2, "retry_exceptions": True}, actor=False)
    assert retried.retry_times == 2
    assert _options.to_invoke_options({"max_retries": -1}, actor=False).retry_times > 1000


def test_rays_retry_policy_retries_crashes_and_only_the_exceptions_asked_for() -> None:
    import yrmpi as yr
    from yrmpi.core.errors import invoke_error, rank_died
    from yrmpi.ray import _options

    def raised(exc: Exception) -> yr.YRInvokeError:
        return invoke_error(exc, type(exc).__name__, str(exc), "", "")

    crash, value_error, key_error = rank_died("died with rank 3", stateless=True), ValueError("v"), KeyError("k")
    default = _options.retry_if({})
    assert default(crash) and not default(raised(value_error))
    assert not default(yr.InstanceExitedError("killed")) and not default(yr.ResourceError("no room"))
    only = _options.retry_if({"retry_exceptions": [ValueError]})
    assert only(crash) and only(raised(value_error)) and not only(raised(key_error))
    anything = _options.retry_if({"retry_exceptions": True})
    assert anything(raised(key_error)) and not anything(yr.CancelError("c"))


@pytest.mark.parametrize("options, error", [
    ({"max_retries": -2}, "The keyword 'max_retries' only accepts None, 0, -1 or a positive integer"),
    ({"max_retries": 1.5}, "The keyword 'max_retries' only accepts None, 0, -1 or a positive integer"),
    ({"retry_exceptions": "ValueError"}, "retry_exceptions must be either a boolean or a list of exceptions"),
    ({"retry_exceptions": [ValueError, 3]}, "retry_exceptions must be either a boolean or a list of exceptions"),
])
def test_bad_retry_options_fail_at_decoration_with_rays_words(options: dict, error: str) -> None:
    import yrmpi.ray as ray

    with pytest.raises(ValueError, match=re.escape(error)):
        ray.remote(**options)(lambda: 0)


@pytest.mark.parametrize("options, error", [
    ({"resources": {"CPU": 1}}, "Use the 'num_cpus'"),
    ({"lifetime": "forever"}, "lifetime"),
    ({"get_if_exists": True}, "actor name must be specified"),
    ({"num_cpus": -1}, "non-negative"),
])
def test_bad_options_fail_with_rays_words(options: dict, error: str) -> None:
    from yrmpi.ray import _options

    with pytest.raises(ValueError, match=re.escape(error)):
        _options.to_invoke_options(options, actor=True)


def test_unknown_options_and_decorator_misuse() -> None:
    import yrmpi.ray as ray

    with pytest.raises(ValueError, match="Invalid option keyword bogus for remote functions"):
        ray.remote(bogus=1)(lambda: 0)
    with pytest.raises(TypeError, match="Remote functions cannot be called directly"):
        ray.remote(lambda: 0)()

    @ray.remote
    class A:
        pass

    with pytest.raises(TypeError, match="Actors cannot be instantiated directly"):
        A()


def test_out_of_scope_parts_name_the_alternative() -> None:
    import yrmpi.ray as ray

    for name, hint in [("data", "Ray Data"), ("serve", "Ray Serve"), ("tune", "yrmpi sweep"),
                       ("job_submission", "sbatch"), ("train", "yrmpi.torch")]:
        with pytest.raises(ray.exceptions.UnsupportedError, match=re.escape(hint)):
            getattr(ray, name)
        with pytest.raises(ImportError, match=re.escape(hint)):
            __import__(f"yrmpi.ray.{name}")
    assert not hasattr(ray, "serve")
    with pytest.raises(ray.exceptions.UnsupportedError, match="pip install"):
        ray.remote(runtime_env={"pip": ["requests"]})(lambda: 0)
    with pytest.raises(ray.exceptions.UnsupportedError, match="resource groups"):
        _ = ray.util.placement_group
    with pytest.raises(ray.exceptions.UnsupportedError, match="yr.collective"):
        _ = ray.util.collective


def test_errors_map_onto_rays() -> None:
    import yrmpi as yr
    from yrmpi.core.errors import invoke_error
    from yrmpi.ray import exceptions as rex

    err = rex.from_yrmpi(invoke_error(KeyError("k"), "KeyError", "'k'", "Traceback ...\n  [yrmpi: called A.f, "
                                      "A instance 5 on rank 1 on h, pid 7]\nKeyError: 'k'\n",
                                      "A instance 5, rank 1 on h, pid 7"))
    assert isinstance(err, rex.RayTaskError) and isinstance(err, KeyError)
    assert (err.function_name, err.pid, err.ip) == ("A.f", 7, "h")
    assert str(err).startswith("ray::A.f() (pid=7, ip=h)")
    import pickle

    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, KeyError) and isinstance(again, rex.RayTaskError)
    assert isinstance(rex.from_yrmpi(yr.YRTimeoutError("t")), rex.GetTimeoutError)
    assert isinstance(rex.from_yrmpi(yr.CancelError("c")), rex.TaskCancelledError)
    died = rex.from_yrmpi(yr.InstanceExitedError("this instance is terminated"))
    assert isinstance(died, rex.ActorDiedError) and "ray.kill" in str(died)


def test_yr_retry_times_still_retries_any_error(run_job, tmp_path: Path) -> None:
    """Ray's retry policy is the adapter's: a plain `yr.invoke` with `retry_times` retries the
    user's exception and a crash of its rank alike, as yr does."""
    proc = run_job(f"""
        import os, signal
        import yrmpi as yr

        def first(name):
            path = os.path.join({str(tmp_path)!r}, name)
            if os.path.exists(path):
                return False
            open(path, "w").close()
            return True

        @yr.invoke(invoke_options=yr.InvokeOptions(retry_times=1))
        def flaky(name, crash):
            if first(name):
                if crash:
                    os.kill(os.getpid(), signal.SIGKILL)
                raise ValueError("first attempt")
            return "done"

        yr.init()
        print("raised once:", yr.get(flaky.invoke("a", False), timeout=60))
        print("crashed once:", yr.get(flaky.invoke("b", True), timeout=60))
        try:
            yr.get(yr.invoke(flaky.__wrapped__).invoke("c", False), timeout=60)
        except ValueError:
            print("retry_times=0: not retried")
        yr.finalize()
    """, n=4)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "raised once: done" in proc.stdout and "crashed once: done" in proc.stdout, proc.stdout
    assert "retry_times=0: not retried" in proc.stdout, proc.stdout
