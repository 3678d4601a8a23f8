"""Render a kustomization: with the real tool when the machine has one, else a small renderer.

:func:`render` prefers ``kustomize build`` and then ``kubectl kustomize`` (kustomize ships inside
kubectl). Neither is on PyPI, so a fresh CI machine may have none: :func:`render_subset` then
renders the subset of kustomize that ``deploy/k8s`` uses — ``resources`` (files and directories),
``namespace``, ``images``, ``replicas`` and ``patches`` (JSON 6902 operations with a
``target``) — and refuses any other field, so a kustomization that grows past the subset fails
loudly instead of rendering wrongly. ``test_k8s.py`` checks that both renderers agree whenever a
real tool is present.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
SCALABLE = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}


def real_tool() -> list[str] | None:
    """Command line of a real kustomize on this machine (without the directory), or None."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render_real(directory: Path, tool: list[str]) -> list[Obj]:
    out = subprocess.run(
        [*tool, str(directory)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def render(directory: Path) -> tuple[list[Obj], str]:
    """The objects of ``directory``'s kustomization and the name of the renderer used."""
    tool = real_tool()
    if tool is not None:
        return render_real(directory, tool), " ".join(tool)
    return render_subset(directory), "tests/deploy/kustomize.py (subset renderer)"


# ---------------------------------------------------------------------------- subset renderer


def render_subset(directory: Path) -> list[Obj]:
    kfile = directory / "kustomization.yaml"
    spec = yaml.safe_load(kfile.read_text())
    unsupported = set(spec) - SUPPORTED
    if unsupported:
        raise NotImplementedError(
            f"{kfile}: fields {sorted(unsupported)} are not supported by the subset renderer"
        )
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects.extend(render_subset(path))
        else:
            objects.extend(copy.deepcopy(d) for d in yaml.safe_load_all(path.read_text()) if d)
    for patch in spec.get("patches", []):
        apply_patch(objects, patch, kfile)
    if "namespace" in spec:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        set_image(objects, image)
    for rep in spec.get("replicas", []):
        hits = [o for o in objects if o.get("kind") in SCALABLE and o["metadata"]["name"] == rep["name"]]
        if not hits:
            raise ValueError(f"{kfile}: replicas: no workload named {rep['name']}")
        for obj in hits:
            obj["spec"]["replicas"] = rep["count"]
    return objects


def _matches(obj: Obj, target: dict[str, Any]) -> bool:
    unknown = set(target) - {"kind", "name", "namespace", "group", "version"}
    if unknown:
        raise NotImplementedError(f"patch target fields {sorted(unknown)} are not supported")
    group, _, version = obj.get("apiVersion", "").rpartition("/")
    checks = {
        "kind": obj.get("kind"),
        "name": obj.get("metadata", {}).get("name"),
        "namespace": obj.get("metadata", {}).get("namespace"),
        "group": group,
        "version": version,
    }
    return all(checks[k] == v for k, v in target.items())


def apply_patch(objects: list[Obj], patch: dict[str, Any], kfile: Path) -> None:
    if set(patch) != {"target", "patch"}:
        raise NotImplementedError(f"{kfile}: only inline JSON 6902 patches with a target are supported")
    ops = yaml.safe_load(patch["patch"])
    if not isinstance(ops, list):
        raise NotImplementedError(f"{kfile}: strategic-merge patches are not supported, use JSON 6902")
    hits = [o for o in objects if _matches(o, patch["target"])]
    if not hits:
        raise ValueError(f"{kfile}: patch target {patch['target']} matches nothing")
    for obj in hits:
        for op in ops:
            json_patch_op(obj, op)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch_op(doc: Obj, op: dict[str, Any]) -> None:
    """Apply one RFC 6902 operation (add, replace, remove) to ``doc`` in place."""
    *parents, last = _pointer(op["path"])
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    kind = op["op"]
    if isinstance(node, list):
        if kind == "add":
            node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
        elif kind == "replace":
            node[int(last)] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del node[int(last)]
        else:
            raise NotImplementedError(f"JSON patch op {kind!r}")
        return
    if kind == "add":
        node[last] = copy.deepcopy(op["value"])
    elif kind == "replace":
        if last not in node:
            raise KeyError(f"replace: {op['path']} does not exist")
        node[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del node[last]
    else:
        raise NotImplementedError(f"JSON patch op {kind!r}")


def _containers(obj: Obj) -> list[Obj]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get(
        "template", {}
    ).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def set_image(objects: list[Obj], image: dict[str, Any]) -> None:
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise NotImplementedError(f"images fields {sorted(unknown)}")
    for obj in objects:
        for container in _containers(obj):
            ref = container.get("image", "")
            name, tag = ref, ""
            if "@" in ref:
                name, tag = ref.split("@", 1)[0], "@" + ref.split("@", 1)[1]
            elif ":" in ref.rsplit("/", 1)[-1]:
                name, tag = ref.rsplit(":", 1)[0], ":" + ref.rsplit(":", 1)[1]
            if name != image["name"]:
                continue
            name = str(image.get("newName", name))
            if "digest" in image:
                tag = "@" + image["digest"]
            elif "newTag" in image:
                tag = ":" + str(image["newTag"])
            container["image"] = name + tag
