"""Which printers' venvs apply builds, and why: the config changed, or the venv did.

The OctoPrint installed in a venv is part of the desired state: one that OctoPrint's updater or a
manual pip put there is drift, and apply (octobrixd alike) builds the pinned one again, carrying
the user's Plugin Manager plugins as every build does.
"""

from __future__ import annotations

from dataclasses import replace

from octobrixd.config.model import Config
from octobrixd.findings import Finding
from octobrixd.instances.instance import Instance
from octobrixd.instances.venv_contents import (
    canonical,
    current_venv,
    drift_of,
    installed_versions,
    read_carried,
    read_not_carried,
    read_venv,
    report,
    user_plugins,
)
from octobrixd.instances.venv_spec import VenvSpec, is_current, venv_link, venv_spec
from octobrixd.system.paths import Layout


def _keeps(layout: Layout, spec: VenvSpec) -> str:
    venv = current_venv(layout, spec.name)
    if venv is None:
        return ""
    remembered = [entry["name"] for entry in read_carried(layout, spec.name)]
    plugins = user_plugins(read_venv(venv), spec.requirements, remembered)
    if not plugins:
        return ""
    return "keeping the plugins installed through OctoPrint: " + ", ".join(f"{p.name} {p.version}" for p in plugins)


def venvs_to_build(layout: Layout, config: Config) -> tuple[VenvSpec, ...]:
    out = []
    for name in sorted(config.printers):
        spec = venv_spec(config, name)
        if not is_current(layout, spec):
            why = "the config asks for another one" if venv_link(layout, name).is_symlink() else "new"
            out.append(replace(spec, reason="; ".join(r for r in (why, _keeps(layout, spec)) if r)))
            continue
        drift = drift_of(installed_versions(current_venv(layout, name)), spec.requirements)
        if drift is not None:
            reason = "; ".join(r for r in (drift, _keeps(layout, spec)) if r)
            out.append(replace(spec, reason=reason, drift=True))
    return tuple(out)


FIX_DRIFT = (
    "sudo octobrixctl apply (builds its OctoPrint again as the config says, "
    "keeping the plugins installed through OctoPrint)"
)


def venv_results(layout: Layout, config: Config | None) -> list[Finding]:
    """doctor's view: each printer's OctoPrint and plugins, and
    plugins the last build could not carry that are still missing."""
    if config is None:
        return []
    out: list[Finding] = []
    for name in sorted(config.printers):
        label = f"octoprint {name}"
        instance = Instance(name, layout)
        try:
            active = instance.active_venv_dir()
        except PermissionError:
            out.append(Finding(label, True, f"cannot read {instance.state_dir} (run doctor as root to check it)"))
            continue
        if active is None:
            continue  # not built yet (or a link octobrix did not write): apply's business, not drift
        got = report(layout, config, name)
        if got.octoprint_version is None and got.drift is None:
            out.append(Finding(label, True, f"cannot read its venv {instance.state_dir / active} (run doctor as root)"))
            continue
        if got.drift is not None:
            out.append(Finding(label, False, got.drift, FIX_DRIFT))
            continue
        plugins = ", ".join(f"{p.name} {p.version} ({p.source})" for p in got.plugins) or "none"
        out.append(Finding(label, True, f"OctoPrint {got.octoprint_version} as the config asks; plugins: {plugins}"))
        installed = {canonical(p.name) for p in got.plugins}
        lost = [e for e in read_not_carried(layout, name) if canonical(e["name"]) not in installed]
        if lost:
            names = ", ".join(f"{e['name']} {e.get('version', '')} ({e.get('reason', '')})" for e in lost)
            out.append(Finding(
                f"plugins {name}",
                False,
                f"the last rebuild of its OctoPrint could not keep: {names}; their settings are kept",
                f"install them again in OctoPrint's Plugin Manager (http://THIS-COMPUTER:{config.printers[name].port}/)"
                " once a version fits",
            ))  # fmt: skip
    return out
