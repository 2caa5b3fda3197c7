"""The image and compose files, read as Docker reads them (no engine runs here): dependencies in
a layer before the sources, a non-root user, healthchecks, authentication on, nothing published
beyond the host's loopback, a CUDA build through a build argument. What the containers run,
docker/entrypoint.sh, runs on the host in test_remote_cluster.py."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
DOCKER = ROOT / "docker"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_requirements_script_lists_the_dependencies_and_extras_of_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = subprocess.run(
        [sys.executable, str(DOCKER / "requirements.py"), str(ROOT / "pyproject.toml"), "cluster", "gpu"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    extras = project["optional-dependencies"]
    assert out == project["dependencies"] + extras["cluster"] + extras["gpu"]
    bad = subprocess.run(
        [sys.executable, str(DOCKER / "requirements.py"), str(ROOT / "pyproject.toml"), "nosuch"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "unknown extras" in bad.stderr


def test_image_installs_dependencies_before_the_sources_and_runs_as_a_user():
    steps = instructions()
    index = {i: (word, args) for i, (word, args) in enumerate(steps)}
    first_source = min(i for i, (w, a) in index.items() if w == "COPY" and a.split()[0] in ("pipeline", "stages"))
    deps = [i for i, (w, a) in index.items() if w == "RUN" and "pip install -r requirements.txt" in a]
    torch = [i for i, (w, a) in index.items() if w == "RUN" and 'pip install "torch==' in a]
    assert deps and torch and max(deps + torch) < first_source
    # the dependency layer sees only pyproject.toml and the script that reads it
    copies_before = [a for i, (w, a) in index.items() if w == "COPY" and i < max(deps)]
    assert copies_before == ["pyproject.toml docker/requirements.py ./"]
    assert any(w == "RUN" and "pip install --no-deps ." in a for w, a in steps)

    users = [a for w, a in steps if w == "USER"]
    assert users and users[-1] not in ("root", "0")
    entry = [i for i, (w, _) in index.items() if w == "ENTRYPOINT"][0]
    assert max(i for i, (w, _) in index.items() if w == "USER") < entry
    assert any(w == "HEALTHCHECK" and "slimpipe-node health" in a for w, a in steps)
    assert any(w == "COPY" and "docker/entrypoint.sh /usr/local/bin/slimpipe-node" in a for w, a in steps)
    text = (DOCKER / "Dockerfile").read_text()
    assert "RAY_AUTH_MODE=disabled" not in text and "0.0.0.0" not in text
    assert any(w == "ARG" and a.startswith("TORCH_INDEX_URL=") for w, a in steps)


def test_dockerignore_sends_only_what_the_image_copies():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert lines[0] == "**"  # nothing is sent unless named: not .git, .venv, data, runs, bench/out
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = set()
    for word, args in instructions():
        if word == "COPY":
            copied.update(a for a in args.split()[:-1] if not a.startswith("--"))
    assert copied <= allowed and allowed <= copied | {"docker/entrypoint.sh"}


def test_compose_secures_every_node_and_publishes_only_on_loopback():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"head", "worker", "worker-gpu", "submit"} <= set(services)
    script = (DOCKER / "entrypoint.sh").read_text()
    for name, svc in services.items():
        env = svc.get("environment", {})
        assert env.get("RAY_AUTH_TOKEN_PATH") == "/run/secrets/ray_token", name
        assert "ray_token" in svc["secrets"], name
        assert env.get("RAY_AUTH_MODE") in (None, "token") and "SLIMPIPE_INSECURE_NO_AUTH" not in env, name
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        assert svc["shm_size"], name
        role = (svc.get("entrypoint") or ["slimpipe-node", svc["command"][0]])[1]
        assert re.search(rf"^  {role}\)", script, re.M), (name, role)
        if name != "submit":
            assert svc["healthcheck"]["test"][:3] == ["CMD", "slimpipe-node", "health"], name
    assert compose["secrets"]["ray_token"]["file"] == "./ray_token"
    gpu = services["worker-gpu"]
    assert gpu["build"]["args"]["TORCH_INDEX_URL"].rstrip("/").rsplit("/", 1)[1].startswith("cu")
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "docker/ray_token" in (ROOT / ".gitignore").read_text()
