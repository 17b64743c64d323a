"""What every fleetwave Deployment must be, whether it comes from manifests/ or the chart:
the restricted Pod Security Standard, probes on /healthz and /readyz, resources."""

from __future__ import annotations

from tests.deploy.kube import Doc


def workload_problems(deployment: Doc) -> list[str]:
    problems: list[str] = []
    pod = deployment["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext", {})
    if pod_sc.get("runAsNonRoot") is not True:
        problems.append("pod securityContext.runAsNonRoot is not true")
    if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("pod seccompProfile is not RuntimeDefault")
    if pod_sc.get("runAsUser", 10001) == 0:
        problems.append("pod runs as uid 0")
    containers = pod["containers"]
    if [c["name"] for c in containers] != ["fleetwave"]:
        problems.append(f"containers {[c['name'] for c in containers]}, expected ['fleetwave']")
    for c in containers:
        sc = c.get("securityContext", {})
        expected = {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                    "allowPrivilegeEscalation": False}
        for key, value in expected.items():
            if sc.get(key) is not value:
                problems.append(
                    f"container securityContext.{key} is {sc.get(key)!r}, not {value!r}")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append("container capabilities do not drop ALL")
        if sc.get("capabilities", {}).get("add"):
            problems.append("container adds capabilities")
        if sc.get("privileged"):
            problems.append("container is privileged")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        if seccomp.get("type") != "RuntimeDefault":
            problems.append("container seccompProfile is not RuntimeDefault")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        if "http" not in ports:
            problems.append("no container port named http")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                            ("startupProbe", "/healthz")):
            get = c.get(probe, {}).get("httpGet", {})
            if get.get("path") != path or get.get("port") != "http":
                problems.append(f"{probe} is {c.get(probe)!r}, expected GET {path} on port http")
        resources = c.get("resources", {})
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        if not requests.get("memory") or not limits.get("memory"):
            problems.append("container has no memory request and limit")
        if c.get("args", [None])[0] not in ("operator", "run"):
            problems.append(f"container args {c.get('args')!r}: expected operator or run")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        for path in ("/tmp", "/data"):
            if path not in mounts:
                problems.append(f"nothing mounted on {path} (the root filesystem is read-only)")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        if "/tmp" in mounts and "emptyDir" not in volumes.get(mounts["/tmp"], {}):
            problems.append("/tmp is not an emptyDir")
        env = {e["name"] for e in c.get("env", [])}
        config_env = bool(c.get("envFrom"))
        if not config_env and "FLEETWAVE_BROKER" not in env:
            problems.append("no FLEETWAVE_BROKER and no envFrom")
    return problems
