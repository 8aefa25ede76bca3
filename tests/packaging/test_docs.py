"""The user docs (README.md, docs/*.md) are true as printed: every code block runs or is checked, every link resolves."""
import ast
import contextlib
import inspect
import io
import math
import os
import pathlib
import re
import shlex
import shutil
import socket
import subprocess
import sys
from importlib.util import find_spec

import numpy as np
import pytest

import adam_c

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
LANGUAGES = {"python", "bash", "c", "cmake", "cython", "text"}

# Written on another branch (the C example project and the config command); checked here once they exist.
PENDING_PATHS = {"docs/examples/c/quickstart.c", "docs/examples/c/CMakeLists.txt", "docs/examples/c"}
PENDING_MODULES = {"adam_c.config"}


def rel(path):
    return path.relative_to(ROOT).as_posix()


def blocks(page):
    """(language, text, line) of every fenced block of a page."""
    text = page.read_text(encoding="utf-8")
    found = []
    for m in re.finditer(r"^```([^\n]*)\n(.*?)^```[ \t]*$", text, flags=re.S | re.M):
        found.append((m.group(1).strip(), m.group(2), text.count("\n", 0, m.start()) + 1))
    return found


def all_blocks(language):
    return [(page, body, line) for page in PAGES for lang, body, line in blocks(page) if lang == language]


# ------------------------------------------------------------------------------------------------ Python blocks
# Each Python block, recognised by its page and a line it contains, with what shows that it did its job (given the
# namespace it left and what it printed). Every block runs alone in an empty namespace, so it names everything it
# uses; a block without an entry fails test_every_python_block_is_checked.

def _finite_loss(ns, out):
    return math.isfinite(float(out.split()[-1])) and len(ns["opt"].state) == 2


def _torch_quickstart(ns, out):
    import torch
    saved = torch.load("optimizer.pt", weights_only=True)
    theirs = torch.optim.AdamW(ns["model"].parameters(), lr=1e-3)  # "torch.optim.AdamW loads it"
    theirs.load_state_dict(saved)
    return len(ns["opt"].state) == 4 and len(theirs.state) == 4 and float(saved["state"][0]["step"]) == 20


def _numbers(out):
    return [float(x) for x in out.split()]


PYTHON = {
    ("README.md", "opt.step([gW, gb])"): _finite_loss,
    ("README.md", "opt = adam_c.torch.AdamW(model.parameters()"): _torch_quickstart,
    ("api.md", '"amsgrad": True}], lr=1e-3)'):
        lambda ns, out: out.split()[0] == "3" and "max_exp_avg_sq" in out and ns["opt"].param_groups[1]["lr"] == 5e-3,
    ("api.md", "cosine_with_warmup(1e-3"):
        lambda ns, out: _numbers(out) == [1e-05, 0.001, 0.0] and ns["opt"].param_groups[0]["lr"] is ns["schedule"],
    ("api.md", "adam_c.adam_step(p, g, m, v"):
        lambda ns, out: np.allclose(list(ns["p"]), [0.8, 2.2], atol=1e-6),
    ("api.md", "info = adam_c.cpu_info()"):
        lambda ns, out: out.split()[0] == adam_c.cpu_info()["target"] and adam_c.get_num_threads() >= 1,
    ("torch.md", "torch.optim.lr_scheduler.StepLR"):
        lambda ns, out: len(ns["opt"].state) == 4 and abs(_numbers(out)[1] - 3e-3 * 0.25) < 1e-12,
    ("torch.md", 'torch.amp.GradScaler("cpu")'):
        lambda ns, out: out.split()[-1] in ("True", "False") and len(ns["opt"].state) == 2,
    ("torch.md", "master_weights=True, ema_decay=0.999"):
        lambda ns, out: out.split()[-1] == "torch.float32" and "ema" in ns["opt"].state[ns["model"].weight],
    ("torch.md", "ZeroRedundancyOptimizer"): None,  # run under torchrun's environment: test_distributed_example
    ("torch.md", "fully_shard(module, mesh=mesh)"): None,  # likewise
    ("torch.md", "deepspeed.initialize(model=model"): None,  # likewise (where DeepSpeed is installed)
    ("mixed-precision.md", "opt.ema_weights()"):
        lambda ns, out: ns["opt"].last_grad_norm > 1.0 and "skipped" not in out and "ema" in ns["opt"].state[0],
    ("compressed-state.md", 'state_dtype="int8"'):
        lambda ns, out: out.split()[0] == "int8" and int(out.split()[1]) < int(out.split()[2]) / 3
        and out.split()[3] == "float32",
    ("checkpoints.md", "pickle.dump(opt.state_dict(), f)"):
        lambda ns, out: out.split()[0] == "1" and abs(float(out.split()[1]) - ns["opt"].param_groups[0]["lr"](2)) == 0,
    ("checkpoints.md", "def save_checkpoint(path, opt)"): lambda ns, out: _npz_round_trip(ns) and out.split() == ["0.01", "2"],
    ("checkpoints.md", 'torch.save(opt.state_dict(), "optimizer.pt")'):
        lambda ns, out: float(out.split("(")[1].split(")")[0]) == 1.0 and len(ns["theirs"].state) == 2,
    ("checkpoints.md", "adam_c.to_torch_state_dict(opt.state_dict())"):
        lambda ns, out: out.strip() == "1" and np.array_equal(ns["back"].state[0]["exp_avg"], ns["opt"].state[0]["exp_avg"]),
}


def _npz_round_trip(ns):
    """The .npz recipe loads back everything, bit for bit, with allow_pickle=False (also compressed state)."""
    opt, restored = ns["opt"], ns["restored"]
    for i, entry in opt.state_dict()["state"].items():
        other = restored.state_dict()["state"][i]
        assert sorted(entry) == sorted(other)
        for key, value in entry.items():
            assert np.array_equal(value, other[key]) if isinstance(value, np.ndarray) else value == other[key]
    # the same helpers with int8 state (a "state_dtype" string and absmax arrays) and a fresh process's view
    W = np.ones(5000, np.float32)
    small = adam_c.Adam([W], state_dtype="int8")
    small.step([np.linspace(-1, 1, W.size, dtype=np.float32)])
    ns["save_checkpoint"]("int8.npz", small)
    back = adam_c.Adam([W.copy()], state_dtype="int8")
    ns["load_checkpoint"]("int8.npz", back)
    a, b = small.state_dict()["state"][0], back.state_dict()["state"][0]
    assert a["state_dtype"] == b["state_dtype"] == "int8"
    assert all(np.array_equal(a[k], b[k]) for k in a if isinstance(a[k], np.ndarray))
    return True


def test_plain_savez_of_a_state_dict_does_not_load_back(tmp_path):
    """What checkpoints.md warns about, so that the warning goes when it stops being true."""
    W = np.ones(3, np.float32)
    opt = adam_c.Adam([W])
    opt.step([np.ones_like(W)])
    np.savez(tmp_path / "sd.npz", **opt.state_dict())
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(tmp_path / "sd.npz")["state"]
    with pytest.raises((TypeError, ValueError)):
        opt.load_state_dict(dict(np.load(tmp_path / "sd.npz", allow_pickle=True)))
    assert "does **not** give a file that loads back" in (ROOT / "docs" / "checkpoints.md").read_text()


def python_block_key(page, body):
    keys = [key for key in PYTHON if key[0] == page.name and key[1] in body]
    assert len(keys) == 1, f"{rel(page)}: a Python block without exactly one entry in PYTHON:\n{body}"
    return keys[0]


def test_every_block_has_a_known_language():
    for page in PAGES:
        for lang, body, line in blocks(page):
            assert lang in LANGUAGES, f"{rel(page)}:{line}: block language {lang!r} (use one of {sorted(LANGUAGES)})"


def test_every_python_block_is_checked():
    found = all_blocks("python")
    keys = [python_block_key(page, body) for page, body, _ in found]
    assert sorted(keys) == sorted(PYTHON), "an entry of PYTHON matches no block any more"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write optimizer.pt, optimizer.npz, ...
    yield tmp_path
    adam_c.set_num_threads(None)  # api.md's example sets threads; the suite's default is to follow OpenMP


def _needs(body):
    """Skip, with the reason, a block whose optional dependency is not installed."""
    for module in ("torch", "ml_dtypes"):
        if re.search(rf"^\s*import {module}\b|^\s*from {module}\b|^\s*import adam_c\.{module}\b", body, re.M):
            pytest.importorskip(module, reason=f"the example imports {module}")


@pytest.mark.parametrize("key", [k for k, check in PYTHON.items() if check is not None], ids=lambda k: f"{k[0]}:{k[1]}")
def test_python_block_runs_as_printed(key, in_tmp):
    page = ROOT / "README.md" if key[0] == "README.md" else ROOT / "docs" / key[0]
    matching = [body for _, body, _ in [(p, b, n) for p, b, n in all_blocks("python") if p == page] if key[1] in body]
    assert len(matching) == 1, f"no block of {key[0]} contains {key[1]!r} any more"
    body = matching[0]
    _needs(body)
    namespace = {"__name__": "__docs__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(body, f"{key[0]} example ({key[1]})", "exec"), namespace)
    assert PYTHON[key](namespace, out.getvalue()), out.getvalue()


@pytest.mark.parametrize("marker", ["ZeroRedundancyOptimizer", "fully_shard(module, mesh=mesh)",
                                    "deepspeed.initialize(model=model"])
def test_distributed_example(tmp_path, marker):
    """The ZeroRedundancyOptimizer and FSDP2 + DCP examples, run as `torchrun --nproc-per-node=1` runs them
    (torchrun's environment)."""
    torch = pytest.importorskip("torch", reason="the example imports torch")
    pytest.importorskip("torch.distributed", reason="torch without torch.distributed")
    if not torch.distributed.is_gloo_available():
        pytest.skip("torch was built without the gloo backend")
    if marker.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (an optional test dependency)")
        if "libasan" in os.environ.get("LD_PRELOAD", ""):
            pytest.skip("DeepSpeed's op build runs the compiler: not under the ASan preload")
    body = [b for p, b, _ in all_blocks("python") if p.name == "torch.md" and marker in b]
    assert len(body) == 1
    (tmp_path / "train.py").write_text(body[0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    run = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    if marker.startswith("fully_shard"):
        assert (tmp_path / "checkpoint" / ".metadata").is_file(), sorted(p.name for p in tmp_path.iterdir())
        return
    if marker.startswith("deepspeed"):
        assert run.stdout.split()[-1] == "5", run.stdout[-500:]  # 5 ZeRO-2 steps taken
        return
    saved = torch.load(tmp_path / "optimizer.pt", weights_only=True)
    assert len(saved["state"]) == 2 and all(float(e["step"]) == 5 for e in saved["state"].values())


# ------------------------------------------------------------------------------------------ signatures (text)

def _documented_signatures():
    for page in PAGES:
        for lang, body, line in blocks(page):
            if lang != "text":
                continue
            for m in re.finditer(r"^adam_c\.([\w.]+)\((.*?)\)\s*$", body, flags=re.S | re.M):
                yield rel(page), line, m.group(1), m.group(2)


def test_documented_signatures_match_the_code():
    found = list(_documented_signatures())
    assert {name for _, _, name, _ in found} >= {"Adam", "AdamW", "adam_step"}
    for where, line, name, params in found:
        documented = ast.parse(f"def f({params}): pass").body[0].args
        names = [a.arg for a in documented.args + documented.kwonlyargs]
        defaults = [ast.literal_eval(d) for d in documented.defaults] + \
                   [None if d is None else ast.literal_eval(d) for d in documented.kw_defaults]
        obj = adam_c
        for part in name.split("."):
            obj = getattr(obj, part)
        actual = inspect.signature(obj)
        real = [p for p in actual.parameters.values() if p.name != "self"]
        assert names == [p.name for p in real], f"{where}:{line}: adam_c.{name}'s parameters"
        positional = len(documented.args)
        assert [p.kind == p.KEYWORD_ONLY for p in real] == [i >= positional for i in range(len(real))], \
            f"{where}:{line}: adam_c.{name}: the keyword-only marker `*` is elsewhere"
        with_default = [p for p in real if p.default is not p.empty]
        documented_defaults = dict(zip([a.arg for a in documented.args][-len(documented.defaults):] if
                                       documented.defaults else [], defaults[:len(documented.defaults)]))
        documented_defaults.update({a.arg: d for a, d, raw in zip(documented.kwonlyargs,
                                                                  defaults[len(documented.defaults):],
                                                                  documented.kw_defaults) if raw is not None})
        assert {p.name: p.default for p in with_default} == documented_defaults, f"{where}:{line}: adam_c.{name}"


# ------------------------------------------------------------------------------------- links and named files

def _slug(heading):
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page):
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.*)$", page.read_text(encoding="utf-8"), re.M)}


def _prose(page):
    return re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_links_resolve():
    checked = 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if rel(dest).rstrip("/") in PENDING_PATHS:
                continue  # test_pending_from_another_branch
            assert dest.exists(), f"{rel(page)}: link to {target}: no such file"
            if anchor:
                assert anchor in _anchors(dest), f"{rel(page)}: link to {target}: no such heading"
            checked += 1
    assert checked > 20


REPO_PATH = re.compile(r"(?<![\w./$-])((?:src|tests|tools|\.ci|docs|cmake|asv_benchmarks)/[\w./*-]*|adam_c/\w+\.pyx?)")


def test_files_named_in_the_docs_exist():
    """Repository files named anywhere in the docs (prose and blocks) exist, e.g. tests/torch_dropin/test_torch_dropin.py."""
    named = set()
    for page in PAGES:
        named.update(p.rstrip(".") for p in REPO_PATH.findall(page.read_text(encoding="utf-8")))
    assert "tests/torch_dropin/test_torch_dropin.py" in named
    for path in sorted(named):
        if path.rstrip("/") in PENDING_PATHS:
            continue
        assert list(ROOT.glob(path)) or (ROOT / path).exists(), f"the docs name {path}, which does not exist"


@pytest.mark.parametrize("path", sorted(PENDING_PATHS) + sorted(PENDING_MODULES))
def test_pending_from_another_branch(path):
    """The C example project and `python -m adam_c.config` are written on another branch; once merged they must
    exist (and the checks above and below cover them)."""
    present = find_spec(path) is not None if path in PENDING_MODULES else (ROOT / path).exists()
    if not present:
        pytest.skip(f"{path} is not in this tree yet (written on the branch that adds the C example and config)")
    assert present


# ------------------------------------------------------------------------------------------------ bash blocks

def _command_lines(body):
    joined = re.sub(r"\\\n\s*", " ", body)
    return [line.split(" #")[0].strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _cli_help(module):
    run = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"python -m {module} --help: {run.stderr}"
    return run.stdout


def test_bash_commands_exist():
    """Each `python -m M --flag` names a module that runs and flags its --help lists; pip extras exist; scripts
    and directories exist."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    helps = {}
    seen_modules = set()
    commands = [(page, body, line) for page, body, line in all_blocks("bash")]
    for page in PAGES:  # and commands quoted in the prose, `python -m adam_c.bench --torch-dropin`
        commands += [(page, span, "prose") for span in re.findall(r"`([^`\n]+)`", _prose(page))
                     if span.startswith(("python -m ", "cd ", "bash "))]
    for page, body, line in commands:
        for command in _command_lines(body):
            for module, args in re.findall(r"python3? -m ([\w.]+)((?: [^|&;)$]*)?)", command):
                if module in ("venv", "pip", "pytest"):
                    continue
                seen_modules.add(module)
                if module in PENDING_MODULES and find_spec(module) is None:
                    continue  # test_pending_from_another_branch
                assert find_spec(module) is not None, f"{rel(page)}:{line}: python -m {module}: no such module"
                if module not in helps:
                    helps[module] = _cli_help(module)
                for flag in re.findall(r"(?<!\S)(--[\w-]+)", args):
                    assert flag in helps[module], f"{rel(page)}:{line}: python -m {module} has no option {flag}"
            for extra in re.findall(r'adam_c\[(\w+)\]|"\.\[(\w+)\]"', command):
                name = extra[0] or extra[1]
                assert re.search(rf"^{name} = \[", pyproject, re.M), f"{rel(page)}:{line}: no extra [{name}]"
            for script in re.findall(r"\bbash (\S+\.sh)", command):
                assert (ROOT / script).is_file(), f"{rel(page)}:{line}: {script}"
            for directory in re.findall(r"\bcd (\w[\w/]*)", command):
                assert (ROOT / directory).is_dir(), f"{rel(page)}:{line}: cd {directory}"
    assert {"adam_c", "adam_c.bench", "adam_c.quality"} <= seen_modules


def test_first_bash_block_is_what_ci_runs():
    """.ci/run takes README.md's first bash block's two command lines: the demo, then the tests."""
    run = subprocess.run(["awk", r"""/^```bash/ && !seen {inside = 1; next}
                             /^```/ && inside {inside = 0; seen = 1}
                             inside && $0 !~ /^[[:space:]]*(#|$)/ {print}""", "README.md"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert run.stdout.count("\n") == 2
    demo, tests = run.stdout.splitlines()
    assert demo.endswith("pip install -e . && python -m adam_c")
    assert 'pip install -e ".[test]"' in tests and tests.endswith("python -m pytest")
    assert re.search(r"awk '/\^```bash/ && !seen", (ROOT / ".ci" / "run").read_text()), ".ci/run parses differently"


# ------------------------------------------------------------------------------------------ C, CMake, Cython

def _c_programs():
    return [(page, body, line) for page, body, line in all_blocks("c")]


def _compiler():
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on PATH")
    return cc


def _expected_output(body):
    expected = re.findall(r"/\* (p = [^*]*?) \*/", body)
    assert len(expected) == 1, "a C example says what it prints in one /* p = ... */ comment"
    return expected[0]


def test_c_blocks_compile_and_run(tmp_path):
    """Each C block is a whole program: built against the installed package's header and library, it prints what
    its comment says."""
    cc = _compiler()
    programs = _c_programs()
    assert len(programs) >= 2
    for i, (page, body, line) in enumerate(programs):
        src = tmp_path / f"example{i}.c"
        src.write_text(body)
        exe = tmp_path / f"example{i}"
        lib = adam_c.get_library_dir()
        subprocess.run([cc, "-std=c99", "-Wall", "-Werror", str(src), f"-I{adam_c.get_include()}", f"-L{lib}",
                        "-ladam_c", f"-Wl,-rpath,{lib}", "-o", str(exe)], check=True, capture_output=True, text=True)
        run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, f"{rel(page)}:{line}: {run.stderr}"
        assert run.stdout.strip() == _expected_output(body), f"{rel(page)}:{line}"


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="the ASan pass's libadam_c.a is instrumented (a plain program cannot link it); the plain "
                           "pass runs these recipes")
def test_pkg_config_recipes_run(tmp_path):
    """The pkg-config command lines, run as printed against a prefix at $HOME/.local (here: the installed
    package's tree, which has the same include/ and lib/ layout), build programs that run."""
    _compiler()
    if shutil.which("pkg-config") is None:
        pytest.skip("no pkg-config on PATH")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".local").symlink_to(pathlib.Path(adam_c.get_include()).parent)
    readme_c = [b for p, b, _ in _c_programs() if p.name == "README.md"]
    assert len(readme_c) == 1
    (tmp_path / "quickstart.c").write_text(readme_c[0])
    expected = _expected_output(readme_c[0])
    ran = 0
    for page, body, line in all_blocks("bash"):
        if "pkg-config" not in body or "cc quickstart.c" not in body:
            continue
        script = "set -euo pipefail\n"
        for command in _command_lines(body):
            if "adam_c.config" in command and find_spec("adam_c.config") is None:
                continue  # test_pending_from_another_branch
            if command.startswith("cc "):  # each recipe's own program, run (the block's way, or here)
                script += "rm -f quickstart\n" + command + "\n"
                script += "" if "./quickstart" in command else "./quickstart\n"
                ran += 1
            else:
                script += command + "\n"
        env = dict(os.environ, HOME=str(home))
        env.pop("PKG_CONFIG_PATH", None)
        env.pop("LD_LIBRARY_PATH", None)
        run = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, f"{rel(page)}:{line}:\n{script}\n{run.stderr}"
        outputs = run.stdout.strip().splitlines()
        assert outputs and set(outputs) == {expected}, f"{rel(page)}:{line}: {run.stdout}"
    assert ran >= 4  # README's, and c.md's shared (rpath, LD_LIBRARY_PATH) and static recipes


def test_cmake_blocks_name_real_targets():
    cmake_dir = pathlib.Path(adam_c.get_cmake_dir())
    exported = "".join(p.read_text() for p in cmake_dir.glob("*.cmake"))
    major_minor = ".".join(adam_c.__version__.split(".")[:2])
    found = all_blocks("cmake")
    assert found
    for page, body, line in found:
        for target in re.findall(r"adam_c::\w+", body):
            assert target in exported, f"{rel(page)}:{line}: {target} is not a target of the CMake package"
        for version in re.findall(r"find_package\(adam_c ([\d.]+)", body):
            assert version == major_minor, f"{rel(page)}:{line}: find_package version {version}"


def test_cython_blocks_cimport_real_names():
    declared = (ROOT / "adam_c" / "_core.pxd").read_text() + (ROOT / "adam_c" / "capi.pxd").read_text()
    found = all_blocks("cython")
    assert found
    for page, body, line in found:
        for module, names in re.findall(r"from ([\w.]+) cimport (.+)", body):
            assert find_spec(module.split(".")[0]) is not None
            for name in (n.strip() for n in names.split(",")):
                assert re.search(rf"\b{name}\b", declared), f"{rel(page)}:{line}: {name} is not declared"


# ------------------------------------------------------------------------------------------------ the pages

def test_pages_are_for_users():
    """The README fits a first read; each page opens with its purpose; no development history."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 210
    assert "OpenMP" not in readme.splitlines()[2], "adam_c runs its own thread pool"
    history = re.compile(r"before this round|this round|an earlier README|Issue \d+|issue's target|targets? .* met"
                         r"|Tried (and|this)|not kept", re.I)
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        lines = text.splitlines()
        assert lines[0].startswith("# "), rel(page)
        assert lines[1] == "" and lines[2] and lines[3] == "" and not lines[2].startswith(("#", "`", "-", "|")), \
            f"{rel(page)}: the title is followed by a one-line purpose"
        for n, line in enumerate(lines, 1):
            assert not history.search(line), f"{rel(page)}:{n}: development history: {line}"
    linked = set(re.findall(r"\(docs/(\w[\w-]*\.md)\)", readme))
    assert linked == {p.name for p in PAGES[1:]}, "the README links every docs page"


def test_readme_numbers_are_those_of_the_performance_page():
    """Each row of the README's table appears in docs/performance.md, where its machine, command and date are."""
    def rows(text):
        return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
                if line.startswith("| ") and not line.startswith("|---")]
    readme = rows((ROOT / "README.md").read_text(encoding="utf-8"))[1:]
    page = rows((ROOT / "docs" / "performance.md").read_text(encoding="utf-8"))
    assert len(readme) >= 3
    for row in readme:
        same = [r for r in page if r[0] == row[0]]
        assert same, f"README row {row[0]!r} is not in docs/performance.md"
        assert all(any(cell == c or c.startswith(cell + " ") for c in same[0]) for cell in row[1:]), row
