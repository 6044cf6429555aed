"""The compose observability profile's files agree with each other and with the worker:
what Grafana is provisioned with points at the profile's Prometheus, the dashboard's
panels use that datasource and only metrics the worker exports, and Prometheus scrapes
the workers' metrics port. (The compose test runs every dashboard query against a real
Prometheus scraping real workers; Grafana itself has no image offline.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from pipeline import metrics

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "deploy" / "observability"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def _mounts(service: str) -> dict[str, str]:
    """container path -> host path (relative to the repository) of a service's volumes."""
    return {container: host for host, container, *_ in (v.split(":") for v in COMPOSE[service]["volumes"])}


def test_prometheus_scrapes_every_worker_replica_on_its_metrics_port() -> None:
    host = _mounts("prometheus")["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load((ROOT / host).read_text())
    [job] = config["scrape_configs"]
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and "worker" in COMPOSE and sd["type"] == "A"
    assert str(sd["port"]) == COMPOSE["worker"]["environment"]["STREAMINFER_METRICS_PORT"]


def test_grafana_is_provisioned_with_the_profile_s_prometheus_and_the_dashboard() -> None:
    mounts = _mounts("grafana")
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"]
    assert datasource["url"] == "http://prometheus:9090" and "9090:9090" in COMPOSE["prometheus"]["ports"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "streaminfer.yml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] in mounts
    dashboards = ROOT / mounts[provider["options"]["path"]]
    home = COMPOSE["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / Path(home).name).is_file() and str(Path(home).parent) == provider["options"]["path"]
    dashboard = json.loads((dashboards / "streaminfer.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"]["uid"] == datasource["uid"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        assert panel["targets"] and all(t["datasource"]["uid"] == datasource["uid"] for t in panel["targets"])


def test_the_dashboard_queries_only_metrics_the_worker_exports() -> None:
    source = Path(metrics.__file__).read_text()
    exported = set(re.findall(r'"(streaminfer_[a-z_]+)"', source))
    exported |= {f"streaminfer_{name}" for name in re.findall(r'_counter\("([a-z_]+)"', source)}
    dashboard = json.loads((OBS / "grafana" / "dashboards" / "streaminfer.json").read_text())
    queried = {m for panel in dashboard["panels"] for t in panel["targets"]
               for m in re.findall(r"streaminfer_[a-z_]+", t["expr"])}
    suffixes = ("_total", "_bucket", "_sum", "_count")
    base = {next((m.removesuffix(s) for s in suffixes if m.endswith(s)), m) for m in queried}
    assert base <= exported, base - exported
    # what the issue asks the dashboard to show
    for wanted in ("results", "consumer_lag", "end_to_end_seconds", "batch_items", "dead_letters",
                   "seconds_to_drain"):
        assert f"streaminfer_{wanted}" in base, wanted
