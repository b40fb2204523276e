"""`helm lint` of the chart for every environment, without a helm binary (optional, not in CI).

Lints deploy/helm/cinnabar once per values set: the defaults, values.yaml merged with each
values-<env>.yaml (what `helm install -f values-<env>.yaml` renders), and a namespaced install
with ServiceMonitors. Lint renders every template and checks that the output is valid YAML
with a kind and an apiVersion. Exits 1 on any lint error.

It uses the Helm library that the PyPI package helm-sdkpy ships (Python 3.12 or newer):

    python3.12 -m venv /tmp/helm-lint
    /tmp/helm-lint/bin/pip install helm-sdkpy pyyaml
    /tmp/helm-lint/bin/python deploy/helm/lint.py
"""

import asyncio
import copy
import os
import shutil
import sys
import tempfile

import helm_sdkpy
import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cinnabar")
SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}


def merged(base, override):
    """`override` on top of `base`, maps merged key by key as Helm merges values files."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def values_sets():
    """Each values set to lint, by name."""
    with open(os.path.join(CHART, "values.yaml")) as f:
        base = yaml.safe_load(f)
    sets = {"defaults": base}
    for env in ("sandbox", "stage", "production"):
        with open(os.path.join(CHART, f"values-{env}.yaml")) as f:
            sets[env] = merged(base, yaml.safe_load(f) or {})
    sets["namespaced"] = merged(base, {"watchNamespace": "team-a", "serviceMonitors": True})
    return sets


async def lint(config, name, values):
    """Lints a copy of the chart whose values.yaml is `values`; returns the error count."""
    with tempfile.TemporaryDirectory() as scratch:
        chart = os.path.join(scratch, "cinnabar")
        shutil.copytree(CHART, chart)
        with open(os.path.join(chart, "values.yaml"), "w") as f:
            yaml.safe_dump(values, f)
        result = await helm_sdkpy.Lint(config).run(chart)
    errors = 0
    for message in result.get("Messages") or []:
        severity = message.get("Severity", 0)
        errors += severity >= 3
        print(f"{name}: {SEVERITY.get(severity, severity)} in {message.get('Path')}")
    print(f"{name}: {'FAILED' if errors else 'ok'}")
    return errors


async def main():
    config = helm_sdkpy.Configuration(namespace="cinnabar-system")
    errors = 0
    for name, values in values_sets().items():
        errors += await lint(config, name, values)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
