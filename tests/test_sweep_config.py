"""Tests for yrmpi.sweep.config: validation messages, env vars, overrides, expansion, fuzz."""

from __future__ import annotations

import ast
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yrmpi.sweep.config import (
    DISTRIBUTIONS,
    MAX_EXPERIMENTS,
    TOP_KEYS,
    Constant,
    Distribution,
    Experiment,
    Grid,
    Metric,
    Resources,
    SweepConfig,
    SweepConfigError,
    apply_overrides,
    expand,
    expand_env,
    experiment_id,
    import_entry,
    load,
    load_dict,
    parse_yaml,
)

TRAINER = textwrap.dedent('''
    import dataclasses

    @dataclasses.dataclass
    class Opts:
        lr: float = 0.1

    class Trainer:
        """A plain class standing in for a user's supervisor."""

        label = 3

        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def train(self, **params):
            return {"loss": params.get("lr", 1.0)}

        def evaluate(self):
            return 0

    class _Proxy:
        """What a yr decorator returns: the class is reachable through __wrapped__."""

        def __init__(self, cls):
            self.__wrapped__ = cls

    Decorated = _Proxy(Trainer)

    def not_a_class():
        return 1
''')

BASE = {
    "name": "lr-sweep",
    "entry": "jobs/trainer.py:Trainer",
    "run": "train",
    "workers": 3,
    "resources": {"supervisor": {"cpu": 100, "memory": 500}, "worker": {"cpu": 1000}},
    "params": {
        "lr": [0.1, 0.01, 0.001],
        "batch": [32, 64],
        "wd": {"loguniform": [1.0e-5, 1.0e-2]},
        "epochs": 5,
    },
    "samples": 2,
    "seeds": [0, 1],
    "metric": {"name": "loss", "mode": "min"},
}

LINE = re.compile(r"^\S.*: \S.*: found .+, expected .+$")


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "trainer.py").write_text(TRAINER)
    return tmp_path


def write(folder: Path, doc: dict | str, name: str = "sweep.yaml") -> Path:
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def with_(**changes: object) -> dict:
    """BASE with top-level keys replaced (value None with key 'drop_x' removes x)."""
    doc = yaml.safe_load(yaml.safe_dump(BASE, sort_keys=False))
    for k, v in changes.items():
        if k.startswith("drop_"):
            doc.pop(k[5:], None)
        else:
            doc[k] = v
    return doc


def problems(folder: Path, doc: dict | str, **kwargs: object) -> list[str]:
    path = write(folder, doc)
    with pytest.raises(SweepConfigError) as info:
        load(path, env=kwargs.pop("env", {}), **kwargs)
    err = info.value
    assert "\n" not in str(err)
    for line in err.problems:
        assert "\n" not in line
        assert line.startswith(f"{path}: ")
    assert str(err).startswith(err.problems[0])
    return list(err.problems)


def one(folder: Path, doc: dict | str, **kwargs: object) -> str:
    found = problems(folder, doc, **kwargs)
    assert len(found) == 1, found
    return found[0]


# ----------------------------------------------------------------- valid configs


def test_full_example_loads_with_typed_fields(sweep_dir: Path) -> None:
    cfg = load(write(sweep_dir, BASE), env={})
    assert isinstance(cfg, SweepConfig)
    assert cfg.name == "lr-sweep" and cfg.run == "train" and cfg.workers == 3
    assert cfg.params["lr"] == Grid((0.1, 0.01, 0.001))
    assert cfg.params["wd"] == Distribution("loguniform", (1e-5, 1e-2))
    assert cfg.params["epochs"] == Constant(5)
    assert cfg.supervisor_resources == Resources(cpu=100, memory=500)
    assert cfg.worker_resources == Resources(cpu=1000, memory=500)  # memory defaulted
    assert cfg.metric == Metric("loss", "min")
    assert cfg.seeds == (0, 1) and cfg.samples == 2
    assert cfg.grid_size == 6 and cfg.size == 24
    with pytest.raises(AttributeError):
        cfg.name = "other"  # type: ignore[misc]


def test_defaults(sweep_dir: Path) -> None:
    doc = {"name": "s", "entry": "jobs/trainer.py:Trainer", "run": "train",
           "params": {"lr": 0.1}}
    cfg = load(write(sweep_dir, doc), env={})
    assert cfg.init == {} and cfg.workers == 0 and cfg.samples == 1
    assert cfg.seeds == (0,) and cfg.retries == 0 and cfg.metric is None
    assert cfg.output == "results/s" and cfg.max_concurrent is None
    assert cfg.grace_period == 30 and cfg.status_interval == 10 and cfg.timeout is None
    assert cfg.supervisor_resources == Resources(500, 500, {})


def test_to_dict_round_trips_and_makes_file_entry_absolute(sweep_dir: Path) -> None:
    cfg = load(write(sweep_dir, with_(init={"data": "x"}, max_concurrent=4)), env={})
    d = cfg.to_dict()
    assert set(d) == set(TOP_KEYS)
    assert d["entry"] == f"{(sweep_dir / 'jobs' / 'trainer.py').resolve()}:Trainer"
    text = yaml.safe_dump(d, sort_keys=False)
    again = load_dict(yaml.safe_load(text), check_entry=False, expand_vars=False)
    for f in ("name", "run", "params", "init", "workers", "supervisor_resources",
              "worker_resources", "samples", "seeds", "retries", "metric", "output",
              "max_concurrent", "grace_period", "status_interval", "timeout"):
        assert getattr(again, f) == getattr(cfg, f), f
    assert [e.id for e in expand(again)] == [e.id for e in expand(cfg)]


# ----------------------------------------------------------------- every validation rule


def test_unknown_key_did_you_mean(sweep_dir: Path) -> None:
    line = one(sweep_dir, with_(workres=3))
    assert LINE.match(line)
    assert line.startswith(f"{sweep_dir / 'sweep.yaml'}: workres: found unknown key 'workres', "
                           "expected one of name, entry, run,")
    assert line.endswith("; did you mean 'workers'?")


def test_missing_required_keys_all_reported(sweep_dir: Path) -> None:
    found = problems(sweep_dir, {"workers": 1})
    assert len(found) == 4
    for key, line in zip(("name", "entry", "run", "params"), found):
        assert f": {key}: found nothing (key is missing), expected " in line


@pytest.mark.parametrize("key,value,expected", [
    ("name", "lr sweep", "expected a non-empty string of letters, digits"),
    ("name", 3, "found integer 3, expected a non-empty string"),
    ("entry", "jobs/trainer.py", "expected 'path/to/file.py:ClassName' or "
                                 "'package.module:ClassName'"),
    ("entry", "not a module:X", "expected 'path/to/file.py:ClassName'"),
    ("run", "not-a-name", "found string \"not-a-name\", expected a method name"),
    ("workers", "three", "found string \"three\", expected an integer >= 0"),
    ("workers", -1, "found integer -1, expected an integer >= 0"),
    ("workers", True, "found boolean true, expected an integer >= 0"),
    ("workers", 2.5, "found number 2.5, expected an integer >= 0"),
    ("init", [1], "found list [1], expected a mapping of constructor keyword arguments"),
    ("samples", 0, "found integer 0, expected an integer >= 1"),
    ("seeds", [], "found list [], expected a non-empty list of distinct integers"),
    ("seeds", [1, 1], "expected a non-empty list of distinct integers"),
    ("seeds", 3, "found integer 3, expected a non-empty list"),
    ("seeds", ["a"], "found list [\"a\"], expected a non-empty list"),
    ("retries", -2, "found integer -2, expected an integer >= 0"),
    ("metric", "loss", "found string \"loss\", expected a mapping like {name: loss, mode: min}"),
    ("output", "", "found string \"\", expected a folder path"),
    ("max_concurrent", 0, "found integer 0, expected an integer >= 1 or null"),
    ("grace_period", -1, "found integer -1, expected a number of seconds >= 0"),
    ("status_interval", 0, "found integer 0, expected a number of seconds > 0"),
    ("timeout", 0, "found integer 0, expected a number of seconds > 0 or null"),
    ("timeout", "1h", "found string \"1h\", expected a number of seconds > 0 or null"),
    ("params", {}, "found mapping {}, expected a non-empty mapping"),
    ("params", [1, 2], "found list [1, 2], expected a non-empty mapping"),
    ("resources", 5, "found integer 5, expected a mapping with supervisor: and worker:"),
])
def test_top_level_type_rules(sweep_dir: Path, key: str, value: object, expected: str) -> None:
    line = one(sweep_dir, with_(**{key: value}))
    assert LINE.match(line), line
    assert line.startswith(f"{sweep_dir / 'sweep.yaml'}: {key}: found ")
    assert expected in line


@pytest.mark.parametrize("resources,path,expected", [
    ({"supervisor": {"cpu": -1}}, "resources.supervisor.cpu",
     "found integer -1, expected an integer >= 0 in millicores"),
    ({"worker": {"memory": 1.5}}, "resources.worker.memory",
     "found number 1.5, expected an integer >= 0 in MB"),
    ({"worker": {"gpu": -1}}, "resources.worker.gpu",
     "found integer -1, expected a number >= 0 (custom resource amount)"),
    ({"worker": {"cpuu": 1000}}, "resources.worker.cpuu",
     "found unknown key 'cpuu', expected cpu, memory or a custom resource name; "
     "did you mean 'cpu'?"),
    ({"workers": {"cpu": 1}}, "resources.workers",
     "found unknown key 'workers', expected supervisor or worker; did you mean 'worker'?"),
    ({"worker": [1000]}, "resources.worker", "found list [1000], expected a mapping like"),
])
def test_resources_rules(sweep_dir: Path, resources: dict, path: str, expected: str) -> None:
    line = one(sweep_dir, with_(resources=resources))
    assert line.startswith(f"{sweep_dir / 'sweep.yaml'}: {path}: {expected}")


def test_custom_resource_named_like_gpu_is_fine(sweep_dir: Path) -> None:
    cfg = load(write(sweep_dir, with_(resources={"worker": {"gpu": 1, "cpu": 1000}})), env={})
    assert cfg.worker_resources.custom == {"gpu": 1}


@pytest.mark.parametrize("value,path,expected", [
    ([], "params.lr", "found an empty list, expected at least one value"),
    ([1, 2, 1], "params.lr[2]", "found duplicate value integer 1, expected distinct values"),
    ({"loguniform": [0, 1]}, "params.lr.loguniform",
     "found list [0, 1], expected [lo, hi] with numbers 0 < lo < hi"),
    ({"loguniform": [-1, 1]}, "params.lr.loguniform", "expected [lo, hi] with numbers 0 < lo"),
    ({"loguniform": [0.1, 0.01]}, "params.lr.loguniform", "0 < lo < hi"),
    ({"uniform": [2, 1]}, "params.lr.uniform",
     "found list [2, 1], expected [lo, hi] with numbers lo < hi"),
    ({"uniform": [1, 1]}, "params.lr.uniform", "lo < hi"),
    ({"uniform": [1]}, "params.lr.uniform", "found list [1], expected [lo, hi]"),
    ({"uniform": "0..1"}, "params.lr.uniform", "found string \"0..1\", expected [lo, hi]"),
    ({"uniform": [0, True]}, "params.lr.uniform", "expected [lo, hi] with numbers"),
    ({"randint": [1, 5.5]}, "params.lr.randint",
     "found list [1, 5.5], expected [lo, hi] with integers lo < hi"),
    ({"randint": [5, 1]}, "params.lr.randint", "integers lo < hi"),
    ({"choice": []}, "params.lr.choice", "found list [], expected a non-empty list of options"),
    ({"choice": "ab"}, "params.lr.choice", "expected a non-empty list of options"),
    ({"loguniforn": [1, 2]}, "params.lr",
     "found unknown distribution 'loguniforn', expected one of loguniform, uniform, randint, "
     "choice; did you mean 'loguniform'?"),
    ({"uniform": [0, 1], "choice": [1]}, "params.lr",
     "found a mapping with keys uniform, choice, expected a distribution like"),
    ({}, "params.lr", "found a mapping with keys none, expected a distribution"),
])
def test_param_rules(sweep_dir: Path, value: object, path: str, expected: str) -> None:
    doc = with_()
    doc["params"]["lr"] = value
    line = one(sweep_dir, doc)
    assert LINE.match(line), line
    assert line.startswith(f"{sweep_dir / 'sweep.yaml'}: {path}: found "), line
    assert expected in line, line


def test_param_name_must_be_a_keyword(sweep_dir: Path) -> None:
    line = one(sweep_dir, "name: s\nentry: jobs/trainer.py:Trainer\nrun: train\n"
                          "params: {2lr: [1], ok: 1}\n")
    assert ': params.2lr: found param name string "2lr", expected a keyword argument' in line


def test_non_json_values_are_rejected(sweep_dir: Path) -> None:
    line = one(sweep_dir, "name: s\nentry: jobs/trainer.py:Trainer\nrun: train\n"
                          "params: {day: 2024-01-02}\n")
    assert ": params.day: found date 2024-01-02 (quote it to pass a string), expected" in line


def test_samples_need_a_distribution(sweep_dir: Path) -> None:
    doc = with_(samples=3)
    del doc["params"]["wd"]
    line = one(sweep_dir, doc)
    assert ": samples: found integer 3, expected 1 when params has no distribution" in line


def test_too_many_experiments(sweep_dir: Path) -> None:
    doc = with_(samples=MAX_EXPERIMENTS)
    line = one(sweep_dir, doc)
    assert f"= {6 * MAX_EXPERIMENTS * 2} experiments, expected at most {MAX_EXPERIMENTS}" in line


def test_metric_rules(sweep_dir: Path) -> None:
    line = one(sweep_dir, with_(metric={"name": "loss", "mode": "minimum"}))
    assert line.endswith(": metric.mode: found string \"minimum\", expected min or max; "
                         "did you mean 'min'?")
    line = one(sweep_dir, with_(metric={"name": "loss"}))
    assert ": metric.mode: found nothing (key is missing), expected min or max" in line
    found = problems(sweep_dir, with_(metric={"nmae": "loss", "mode": "max"}))
    assert any(": metric.nmae: found unknown key 'nmae', expected name and mode; did you mean "
               "'name'?" in x for x in found)
    assert any(": metric.name: found nothing (key is missing)" in x for x in found)


def test_all_problems_are_collected(sweep_dir: Path) -> None:
    doc = with_(workers="x", retries=-1, seeds=[], metric={"name": "l", "mode": "up"})
    path = write(sweep_dir, doc)
    with pytest.raises(SweepConfigError) as info:
        load(path, env={})
    assert len(info.value.problems) == 4
    assert str(info.value) == info.value.problems[0] + " (+3 more problems)"
    assert isinstance(info.value, ValueError)


# ----------------------------------------------------------------- entry


def test_entry_missing_file_lists_where_it_looked(sweep_dir: Path) -> None:
    line = one(sweep_dir, with_(entry="jobs/nope.py:Trainer"))
    assert ": entry: found \"jobs/nope.py:Trainer\" but there is no such file (looked at " in line
    assert str(sweep_dir / "jobs/nope.py") in line


def test_entry_attribute_did_you_mean(sweep_dir: Path) -> None:
    line = one(sweep_dir, with_(entry="jobs/trainer.py:Trainr"))
    path = (sweep_dir / "jobs" / "trainer.py").resolve()
    assert line.endswith(f": entry: found no 'Trainr' in {path}, expected a class defined "
                         "there; did you mean 'Trainer'?")


def test_entry_not_a_class(sweep_dir: Path) -> None:
    line = one(sweep_dir, with_(entry="jobs/trainer.py:not_a_class"))
    assert ": entry: found function 'jobs/trainer.py:not_a_class', expected a class" in line


def test_entry_import_error_is_one_line(sweep_dir: Path) -> None:
    (sweep_dir / "jobs" / "broken.py").write_text("import not_a_real_module_xyz\n")
    line = one(sweep_dir, with_(entry="jobs/broken.py:Trainer"))
    assert ("entry: found \"jobs/broken.py:Trainer\" whose import failed with "
            "ModuleNotFoundError: No module named 'not_a_real_module_xyz', expected a module "
            "that imports cleanly") in line


def test_entry_syntax_error_and_system_exit(sweep_dir: Path) -> None:
    (sweep_dir / "jobs" / "bad.py").write_text("def f(:\n")
    assert "whose import failed with SyntaxError" in one(sweep_dir, with_(entry="jobs/bad.py:X"))
    (sweep_dir / "jobs" / "exits.py").write_text("raise SystemExit(3)\n")
    assert "failed with SystemExit: 3" in one(sweep_dir, with_(entry="jobs/exits.py:X"))


def test_run_method_did_you_mean(sweep_dir: Path) -> None:
    line = one(sweep_dir, with_(run="trian"))
    assert line.endswith(": run: found no method 'trian' on Trainer, expected a method of the "
                         "entry class; did you mean 'train'?")
    line = one(sweep_dir, with_(run="label"))
    assert ": run: found int attribute 'label' on Trainer, expected a method" in line


def test_decorated_class_is_looked_through(sweep_dir: Path) -> None:
    cfg = load(write(sweep_dir, with_(entry="jobs/trainer.py:Decorated")), env={})
    obj = import_entry(cfg.entry, cfg.base_dir)
    assert obj.__wrapped__.__name__ == "Trainer"  # returned unchanged, proxy and all
    assert "no method 'nope' on Trainer" in one(
        sweep_dir, with_(entry="jobs/trainer.py:Decorated", run="nope"))


def test_entry_resolves_yaml_folder_first_then_cwd(sweep_dir: Path, tmp_path_factory,
                                                  monkeypatch) -> None:
    elsewhere = tmp_path_factory.mktemp("cwd")
    (elsewhere / "jobs").mkdir()
    (elsewhere / "jobs" / "trainer.py").write_text("class Trainer:\n    def other(self): pass\n")
    (elsewhere / "jobs" / "only_cwd.py").write_text("class T:\n    def train(self): pass\n")
    monkeypatch.chdir(elsewhere)
    cfg = load(write(sweep_dir, BASE), env={})  # the YAML folder's copy has train()
    assert cfg.entry_file() == (sweep_dir / "jobs" / "trainer.py").resolve()
    cfg = load(write(sweep_dir, with_(entry="jobs/only_cwd.py:T")), env={})
    assert cfg.entry_file() == (elsewhere / "jobs" / "only_cwd.py").resolve()


def test_module_entry(sweep_dir: Path, monkeypatch) -> None:
    pkg = sweep_dir / "mypkg_sweep_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text("class M:\n    def fit(self): return 1\n")
    monkeypatch.syspath_prepend(str(sweep_dir))
    cfg = load(write(sweep_dir, with_(entry="mypkg_sweep_test.models:M", run="fit")), env={})
    assert cfg.entry_file() is None
    assert import_entry(cfg.entry).__name__ == "M"
    line = one(sweep_dir, with_(entry="mypkg_sweep_test.nothere:M"))
    assert "ModuleNotFoundError: No module named 'mypkg_sweep_test.nothere'" in line


def test_file_entry_is_in_sys_modules_and_ships_by_value(sweep_dir: Path) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    cls = import_entry("jobs/trainer.py:Trainer", sweep_dir)
    assert sys.modules[cls.__module__].Trainer is cls
    assert sys.modules[cls.__module__].Opts().lr == 0.1  # dataclasses need sys.modules
    blob = cloudpickle.dumps(cls)
    code = ("import sys, cloudpickle; cls = cloudpickle.loads(sys.stdin.buffer.read()); "
            "print(cls().train(lr=0.5)['loss'])")
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True,
                         check=True, cwd="/")
    assert out.stdout.decode().strip() == "0.5"


def test_entry_file_runs_once_per_version(sweep_dir: Path) -> None:
    (sweep_dir / "jobs" / "counted.py").write_text(
        "import builtins\nbuiltins.SWEEP_TEST_COUNT = getattr(builtins, 'SWEEP_TEST_COUNT', 0) + 1"
        "\nclass T:\n    def train(self): pass\n")
    import builtins

    path = write(sweep_dir, with_(entry="jobs/counted.py:T"))
    first = load(path, env={})
    assert import_entry(first.entry, first.base_dir) is import_entry(first.entry, sweep_dir)
    assert builtins.SWEEP_TEST_COUNT == 1  # validation and the runner share one import
    (sweep_dir / "jobs" / "counted.py").write_text(
        "import builtins\nbuiltins.SWEEP_TEST_COUNT += 1\nclass T:\n    def train(self): pass\n"
        "    def extra(self): pass\n")
    assert hasattr(import_entry(first.entry, sweep_dir), "extra")  # an edited file is reloaded
    assert builtins.SWEEP_TEST_COUNT == 2
    del builtins.SWEEP_TEST_COUNT


def test_check_entry_false_skips_import(sweep_dir: Path) -> None:
    cfg = load(write(sweep_dir, with_(entry="jobs/nope.py:X")), env={}, check_entry=False)
    assert cfg.entry == "jobs/nope.py:X"


# ----------------------------------------------------------------- YAML and file errors


def test_yaml_syntax_error_has_line_and_column(sweep_dir: Path) -> None:
    line = one(sweep_dir, "name: s\nparams: {lr: [1, 2\n")
    assert re.match(rf"^{re.escape(str(sweep_dir / 'sweep.yaml'))}: line 3 column 1: found "
                    r"invalid YAML \(.+\), expected valid YAML syntax$", line), line


def test_yaml_tab_indent_error(sweep_dir: Path) -> None:
    line = one(sweep_dir, "name: s\nparams:\n\tlr: 1\n")
    assert ": line 3 column 1: found invalid YAML" in line


def test_yaml_unsafe_tag_is_refused(sweep_dir: Path) -> None:
    line = one(sweep_dir, "name: !!python/object/apply:os.system [echo hi]\n")
    assert "found invalid YAML (could not determine a constructor" in line


def test_yaml_bad_timestamp_and_alias_cycle(sweep_dir: Path) -> None:
    assert "ValueError: month must be in 1..12" in one(sweep_dir, "name: 2024-13-45\n")
    assert "alias that contains itself" in one(sweep_dir, "a: &x [*x]\n")


def test_empty_and_non_mapping_documents(sweep_dir: Path) -> None:
    assert ": (document): found an empty document, expected a mapping" in one(sweep_dir, "")
    assert ": (document): found list [1, 2], expected a mapping" in one(sweep_dir, "[1, 2]\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SweepConfigError) as info:
        load(tmp_path / "nope.yaml")
    assert str(info.value) == (f"{tmp_path / 'nope.yaml'}: (file): found no readable file "
                               "(No such file or directory), expected a sweep YAML file")


def test_parse_yaml_alias_bomb_is_bounded() -> None:
    bomb = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh"))
    with pytest.raises(SweepConfigError, match="more than 200000 values"):
        load_dict(parse_yaml(bomb, "bomb.yaml"), source="bomb.yaml")


# ----------------------------------------------------------------- env vars


def test_env_vars_expand_in_strings(sweep_dir: Path) -> None:
    doc = with_(output="${SCRATCH}/runs/${USER_X:-anon}", init={"path": "$${LITERAL} $$5"},
                workers="${NW:-2}", grace_period="${GRACE}")
    cfg = load(write(sweep_dir, doc), env={"SCRATCH": "/scratch", "GRACE": "7.5"})
    assert cfg.output == "/scratch/runs/anon"
    assert cfg.init == {"path": "${LITERAL} $5"}
    assert cfg.workers == 2 and cfg.grace_period == 7.5  # whole-value refs become numbers


def test_env_var_default_applies_to_empty_value() -> None:
    assert expand_env({"a": "${X:-d}", "b": "x${X}y"}, {"X": ""}) == {"a": "d", "b": "xy"}


def test_env_var_in_params_list() -> None:
    out = expand_env({"params": {"data": ["${D}/a", "${D}/b"]}}, {"D": "/d"})
    assert out == {"params": {"data": ["/d/a", "/d/b"]}}


def test_unset_env_var_is_an_error_naming_it(sweep_dir: Path) -> None:
    line = one(sweep_dir, with_(output="${NOT_SET_VAR}/x"))
    assert line == (f"{sweep_dir / 'sweep.yaml'}: output: found ${{NOT_SET_VAR}} but environment "
                    "variable NOT_SET_VAR is not set, expected NOT_SET_VAR set, or a default "
                    "like ${NOT_SET_VAR:-value}")


def test_unset_env_var_in_nested_value_and_no_cascade(sweep_dir: Path) -> None:
    doc = with_(workers="${NW}")
    doc["params"]["lr"] = ["${LR}"]
    found = problems(sweep_dir, doc)
    assert len(found) == 2  # workers is not reported again as "found string"
    assert any(": workers: found ${NW} but environment variable NW is not set" in x
               for x in found)
    assert any(": params.lr[0]: found ${LR} but environment variable LR is not set" in x
               for x in found)


def test_malformed_env_reference(sweep_dir: Path) -> None:
    line = one(sweep_dir, with_(output="a/${1BAD}"))
    assert (": output: found a malformed variable reference in \"a/${1BAD}\", "
            "expected ${NAME}") in line


def test_env_defaults_to_os_environ(sweep_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("SWEEP_TEST_OUT", "from-env")
    cfg = load(write(sweep_dir, with_(output="${SWEEP_TEST_OUT}")))
    assert cfg.output == "from-env"


# ----------------------------------------------------------------- overrides


def test_overrides_parse_values_as_yaml() -> None:
    raw = {"name": "s", "params": {"lr": [1], "wd": {"uniform": [0, 1]}}}
    out = apply_overrides(raw, ["workers=4", "params.lr=[0.5, 2]", "params.wd.uniform=[1, 3]",
                                "resources.worker.gpu=1", "metric.mode=max", "timeout=null",
                                "name=with=equals", "init.model.depth=3"])
    assert out["workers"] == 4 and out["params"]["lr"] == [0.5, 2]
    assert out["params"]["wd"] == {"uniform": [1, 3]}
    assert out["resources"] == {"worker": {"gpu": 1}} and out["metric"] == {"mode": "max"}
    assert out["timeout"] is None and out["name"] == "with=equals"
    assert out["init"] == {"model": {"depth": 3}}
    assert raw == {"name": "s", "params": {"lr": [1], "wd": {"uniform": [0, 1]}}}  # untouched


@pytest.mark.parametrize("item,expected", [
    ("wokers=3", "<dict>: wokers: found unknown key 'wokers' (from --set wokers=3), expected "
                 "one of name, entry,"),
    ("params.lrr=1", "<dict>: params.lrr: found unknown param 'lrr' (from --set params.lrr=1), "
                     "expected one of lr; did you mean 'lr'?"),
    ("metric.nmae=x", "<dict>: metric.nmae: found unknown key 'nmae' (from --set metric.nmae=x), "
                      "expected one of name, mode; did you mean 'name'?"),
    ("resources.superviser.cpu=1", "<dict>: resources.superviser: found unknown key "
                                   "'superviser'"),
    ("name.x=1", "<dict>: name: found string \"s\" (from --set name.x=1), expected a mapping "
                 "to set 'x' inside"),
    ("workers.x=1", "<dict>: workers: found nothing (key is missing) (from --set workers.x=1), "
                    "expected a mapping to set 'x' inside"),
    ("noequals", "<dict>: --set: found \"noequals\", expected key.path=value"),
    ("a..b=1", "<dict>: --set: found \"a..b=1\", expected key.path=value"),
])
def test_override_errors(item: str, expected: str) -> None:
    with pytest.raises(SweepConfigError) as info:
        apply_overrides({"name": "s", "params": {"lr": [1]}}, [item])
    assert str(info.value).startswith(expected), str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_through_load_name_the_file(sweep_dir: Path) -> None:
    path = write(sweep_dir, BASE)
    cfg = load(path, ["workers=5", "params.batch=[128]", "seeds=[7]"], env={})
    assert cfg.workers == 5 and cfg.params["batch"] == Grid((128,)) and cfg.seeds == (7,)
    with pytest.raises(SweepConfigError, match=rf"^{re.escape(str(path))}: params.bach: found "
                                               r"unknown param 'bach'.*did you mean 'batch'\?$"):
        load(path, ["params.bach=[1]"], env={})
    with pytest.raises(SweepConfigError, match=r": workers: found string \"many\""):
        load(path, ["workers=many"], env={})  # overridden values are validated too


def test_override_can_use_env_syntax(sweep_dir: Path) -> None:
    cfg = load(write(sweep_dir, BASE), ["output=${OUT}/x"], env={"OUT": "/o"})
    assert cfg.output == "/o/x"


# ----------------------------------------------------------------- expansion


def test_grid_sizes_and_order(sweep_dir: Path) -> None:
    cfg = load(write(sweep_dir, BASE), env={})
    exps = expand(cfg)
    assert len(exps) == 3 * 2 * 2 * 2 == 24
    assert [e.index for e in exps] == list(range(24))
    assert len({e.id for e in exps}) == 24
    # lr is the outer axis, batch inner, then samples, then seeds
    assert [e.params["lr"] for e in exps[:8]] == [0.1] * 8
    assert [e.params["batch"] for e in exps[:8]] == [32] * 4 + [64] * 4
    assert [e.seed for e in exps[:4]] == [0, 1, 0, 1]
    # seeds repeat the same draw; samples differ
    assert exps[0].params == exps[1].params and exps[0].params != exps[2].params
    assert all(e.params["epochs"] == 5 for e in exps)
    assert all(1e-5 <= e.params["wd"] <= 1e-2 for e in exps)
    assert list(exps[0].params) == ["lr", "batch", "wd", "epochs"]


@pytest.mark.parametrize("params,size", [
    ({"a": 1}, 1),
    ({"a": [1, 2, 3]}, 3),
    ({"a": [1, 2], "b": [1, 2, 3], "c": ["x", "y"]}, 12),
    ({"a": {"uniform": [0, 1]}}, 1),
])
def test_grid_size_table(params: dict, size: int) -> None:
    cfg = load_dict({"name": "g", "entry": "m:C", "run": "r", "params": params},
                    check_entry=False)
    assert cfg.grid_size * cfg.samples * len(cfg.seeds) == size == len(expand(cfg))


def test_sampling_is_deterministic_across_reloads(sweep_dir: Path) -> None:
    path = write(sweep_dir, BASE)
    first = expand(load(path, env={}))
    second = expand(load(path, env={}))
    assert first == second


def test_ids_stable_after_key_reorder(sweep_dir: Path) -> None:
    a = expand(load(write(sweep_dir, BASE, "a.yaml"), env={}))
    doc = dict(reversed(list(with_().items())))
    doc["params"] = dict(reversed(list(doc["params"].items())))
    doc["params"]["wd"] = {"loguniform": [1.0e-5, 1.0e-2]}
    b = expand(load(write(sweep_dir, doc, "b.yaml"), env={}))
    assert {e.id: (e.params, e.seed) for e in a} == {e.id: (e.params, e.seed) for e in b}


def test_id_is_params_and_seed_only() -> None:
    assert experiment_id({"a": 1, "b": 2}, 0) == experiment_id({"b": 2, "a": 1}, 0)
    assert experiment_id({"a": 1}, 0) != experiment_id({"a": 1}, 1)
    assert experiment_id({"a": 1}, 0) != experiment_id({"a": 1.0}, 0)
    assert re.fullmatch(r"[0-9a-f]{12}", experiment_id({"a": [1, {"x": None}]}, 3))


def test_draws_depend_on_name_point_and_sample_only() -> None:
    base = {"name": "s", "entry": "m:C", "run": "r", "samples": 3,
            "params": {"lr": [1, 2], "wd": {"uniform": [0, 1]}}}
    draws = [e.params["wd"] for e in expand(load_dict(base, check_entry=False))]
    more = dict(base, params={**base["params"], "epochs": 9}, seeds=[5])
    assert [e.params["wd"] for e in expand(load_dict(more, check_entry=False))] == draws
    renamed = dict(base, name="other")
    assert [e.params["wd"] for e in expand(load_dict(renamed, check_entry=False))] != draws
    assert len(set(draws)) == 6


def test_distribution_bounds() -> None:
    doc = {"name": "d", "entry": "m:C", "run": "r", "samples": 400,
           "params": {"u": {"uniform": [-1, 1]}, "l": {"loguniform": [1e-4, 1e-1]},
                      "i": {"randint": [3, 5]}, "c": {"choice": ["a", [1], {"k": 1}]}}}
    exps = expand(load_dict(doc, check_entry=False))
    assert all(-1 <= e.params["u"] < 1 for e in exps)
    assert all(1e-4 <= e.params["l"] <= 1e-1 for e in exps)
    assert {e.params["i"] for e in exps} == {3, 4, 5}  # both ends included
    assert {str(e.params["c"]) for e in exps} == {"a", "[1]", "{'k': 1}"}
    logs = [math.log10(e.params["l"]) for e in exps]
    assert sum(1 for x in logs if x < -2.5) > 100  # log-uniform, not uniform


def test_identical_draws_are_merged() -> None:
    doc = {"name": "m", "entry": "m:C", "run": "r", "samples": 10,
           "params": {"opt": {"choice": ["adam", "sgd"]}}}
    exps = expand(load_dict(doc, check_entry=False))
    assert sorted(e.params["opt"] for e in exps) == ["adam", "sgd"]
    assert [e.index for e in exps] == [0, 1]


def test_experiments_do_not_share_mutable_params() -> None:
    doc = {"name": "m", "entry": "m:C", "run": "r", "seeds": [0, 1],
           "params": {"arch": [[64, 64]]}}
    a, b = expand(load_dict(doc, check_entry=False))
    a.params["arch"].append(1)
    assert b.params["arch"] == [64, 64]
    assert isinstance(a, Experiment)


# ----------------------------------------------------------------- fuzz

_WORDS = (*TOP_KEYS, *DISTRIBUTIONS, "supervisor", "worker", "cpu", "memory", "gpu", "mode",
          "min", "max", "lr")
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.integers(-(10**400), 10**400),
    st.sampled_from(["${X}", "${X:-3}", "$$", "${", "jobs/trainer.py:Trainer", "train",
                     "m:C", "min", "max", "1e-3", "-1"]),
)
_keys = st.one_of(st.sampled_from(_WORDS), st.text(max_size=8), st.integers(-3, 3),
                  st.booleans(), st.none())
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(_keys, children, max_size=4)),
    max_leaves=16,
)


@st.composite
def _documents(draw: st.DrawFn) -> object:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(_values)  # anything at all, including non-mappings
    doc = yaml.safe_load(yaml.safe_dump(BASE, sort_keys=False))
    for key in draw(st.lists(st.sampled_from(TOP_KEYS), max_size=4)):
        doc.pop(key, None)
    doc.update(draw(st.dictionaries(_keys, _values, max_size=4)))
    if draw(st.booleans()):
        doc["params"] = draw(st.dictionaries(_keys, _values, min_size=0, max_size=3))
    return doc


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "jobs").mkdir()
    (folder / "jobs" / "trainer.py").write_text(TRAINER)
    return folder


def _check_outcome(fn, source: str) -> None:
    try:
        cfg = fn()
    except SweepConfigError as e:
        assert e.problems and all(len(p.splitlines()) == 1 and p.startswith(source)
                                  for p in e.problems)
        assert len(str(e).splitlines()) == 1 and str(e).startswith(e.problems[0])
        return
    assert isinstance(cfg, SweepConfig)
    exps = expand(cfg)
    assert 1 <= len(exps) <= MAX_EXPERIMENTS
    assert len({e.id for e in exps}) == len(exps)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(doc=_documents(), overrides=st.lists(st.text(max_size=16), max_size=2))
def test_fuzz_load_dict_only_raises_config_errors(fuzz_dir: Path, doc: object,
                                                  overrides: list[str]) -> None:
    _check_outcome(lambda: load_dict(doc, source="fuzz.yaml", base_dir=fuzz_dir,
                                     overrides=overrides, env={"X": "1"}), "fuzz.yaml")


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(doc=_documents(), raw=st.one_of(st.none(), st.text(max_size=60)))
def test_fuzz_load_from_yaml_text(fuzz_dir: Path, doc: object, raw: str | None) -> None:
    path = fuzz_dir / "fuzz.yaml"
    if raw is None:
        try:
            text = yaml.safe_dump(doc, sort_keys=False)
        except yaml.YAMLError:
            return
    else:
        text = raw
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _check_outcome(lambda: load(path, env={}), str(path))


# Lowest first; a module may import only from modules before it, so there is no import cycle.
CONFIG_LAYERS = ("errors", "targets", "types", "values", "yaml12", "env", "overrides", "validate_params",
                 "trials", "validation", "entry", "expansion", "loading")


def test_config_modules_import_only_downward() -> None:
    import yrmpi.sweep.config as package

    folder = Path(package.__file__).parent
    assert sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__") == sorted(CONFIG_LAYERS)
    for level, name in enumerate(CONFIG_LAYERS):
        tree = ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        used = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.level == 1}
        assert used <= set(CONFIG_LAYERS[:level]), f"{name} imports {sorted(used - set(CONFIG_LAYERS[:level]))}"
