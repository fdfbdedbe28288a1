"""launch/cluster/: the Ray cluster-launcher YAML against Ray's own schema, the KubeRay RayJob's resources.

No cluster is started: the launcher config is checked by the schema that ships in the ray package
(and by the launcher's own config preparation when that private API is there), the RayJob by its
structure, and both by whether their smallest cluster holds the run their command starts.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

from launch.cli import parse_train_args

CLUSTER = Path(__file__).resolve().parent.parent / "launch" / "cluster"
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


def load_yaml(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def cpus_needed(entrypoint_args: list[str]) -> int:
    """Logical CPUs the run asks Ray for: actors, shards, the learner, the eval actor."""
    cfg, _ = parse_train_args(entrypoint_args)
    assert cfg.actor.num_actors > 0, "a cluster run should fix --actor.num-actors"
    return cfg.actor.num_actors + cfg.replay.num_shards + cfg.run.learner_cpus + 1


def image_ray_version(image: str) -> str:
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3\d+-(gpu|cpu)", image)
    assert match, image
    return match.group(1)


def dockerfile_base() -> str:
    (line,) = [x for x in (CLUSTER / "Dockerfile").read_text().splitlines() if x.startswith("FROM")]
    return line.split()[1]


# ---- the Ray cluster-launcher YAML ------------------------------------------------------------


def test_launcher_yaml_matches_rays_schema():
    jsonschema.validate(load_yaml("aws.yaml"), json.loads(RAY_SCHEMA.read_text()))


@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c.update(max_worker=4),  # a misspelt key
        lambda c: c["available_node_types"]["head.gpu"]["resources"].update(GPU="1"),
        lambda c: c["available_node_types"]["worker.cpu"].pop("node_config"),
        lambda c: c.pop("provider"),
    ],
)
def test_the_schema_check_rejects_broken_configs(break_it):
    config = copy.deepcopy(load_yaml("aws.yaml"))
    break_it(config)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, json.loads(RAY_SCHEMA.read_text()))


def test_launcher_yaml_passes_ray_up_config_checks():
    """`ray up` fills in the provider's defaults, then validates; a private API, so skip if gone."""
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError:
        pytest.skip("ray.autoscaler._private.util moved in this Ray version")
    validate_config(prepare_config(load_yaml("aws.yaml")))


def test_launcher_yaml_topology():
    config = load_yaml("aws.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert head["resources"]["GPU"] >= 1, "the learner needs a GPU on the head"
    assert workers
    for t in workers.values():
        assert t["resources"].get("GPU", 0) == 0 and t["resources"]["CPU"] >= 1
        assert 0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"]
    assert sum(t["min_workers"] for t in workers.values()) <= config["max_workers"]
    # Autoscaling: room above the minimum.
    assert sum(t["max_workers"] for t in workers.values()) > sum(
        t["min_workers"] for t in workers.values()
    )

    # The project is synced and installed on every node, after the right torch build.
    assert config["file_mounts"] == {"~/sacae": "."}
    for role in ("head_setup_commands", "worker_setup_commands"):
        commands = config[role]
        assert commands[-1] == "pip install ~/sacae" and "torch==" in commands[0], role
    assert "download.pytorch.org/whl/cpu" in config["worker_setup_commands"][0]
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP" in c for c in config["worker_start_ray_commands"])
    docker = config["docker"]
    assert image_ray_version(docker["head_image"]) == image_ray_version(docker["worker_image"])
    assert docker["head_image"].endswith("-gpu") and docker["worker_image"].endswith("-cpu")

    # The documented job fits the smallest cluster (head + minimum workers).
    header = (CLUSTER / "aws.yaml").read_text().split("\n\n")[0]
    command = re.search(r"-- sacae train (.*?)\n#   ray rsync", header, re.S).group(1)
    args = shlex.split(command.replace("\\\n#", " "))
    assert args[:2] == ["--run.address", "auto"]
    minimum = head["resources"]["CPU"] + sum(
        t["min_workers"] * t["resources"]["CPU"] for t in workers.values()
    )
    assert minimum >= cpus_needed(args)


# ---- the KubeRay RayJob -----------------------------------------------------------------------


def container(group: dict) -> dict:
    (c,) = group["template"]["spec"]["containers"]
    return c


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_rayjob_manifest_resources():
    job = load_yaml("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    entrypoint = shlex.split(spec["entrypoint"])
    assert entrypoint[:2] == ["sacae", "train"]
    cfg, _ = parse_train_args(entrypoint[2:])  # every flag is a real config field
    assert cfg.run.address == "auto" and cfg.run.require_gpu

    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    head = container(cluster["headGroupSpec"])
    for side in ("requests", "limits"):
        assert int(head["resources"][side]["nvidia.com/gpu"]) >= 1, side
    groups = cluster["workerGroupSpecs"]
    assert groups
    worker_cpus = 0.0
    for group in groups:
        resources = container(group)["resources"]
        assert "nvidia.com/gpu" not in resources["limits"]
        assert cpus(resources["requests"]["cpu"]) >= 1
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["maxReplicas"] > group["minReplicas"]  # room to autoscale
        worker_cpus += group["minReplicas"] * cpus(resources["limits"]["cpu"])
    head_cpus = cpus(head["resources"]["limits"]["cpu"])
    assert head_cpus + worker_cpus >= cpus_needed(entrypoint[2:])


def test_rayjob_image_is_the_dockerfiles_and_matches_ray_version():
    cluster = load_yaml("rayjob.yaml")["spec"]["rayClusterSpec"]
    images = {container(cluster["headGroupSpec"])["image"]}
    images |= {container(g)["image"] for g in cluster["workerGroupSpecs"]}
    assert len(images) == 1
    (image,) = images
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"-t {image} ." in dockerfile, "the Dockerfile's build command tags the manifest's image"
    assert image_ray_version(dockerfile_base()) == cluster["rayVersion"]
    aws = load_yaml("aws.yaml")["docker"]
    assert image_ray_version(aws["head_image"]) == cluster["rayVersion"]


def test_cluster_nodes_start_their_workers_at_normal_priority():
    """Ray's default worker niceness (15) lets any other process on a node starve the run."""
    config = load_yaml("aws.yaml")
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for command in [c for c in starts if "ray start" in c]:
        assert "RAY_worker_niceness=0 ray start" in command, command
    assert "ENV RAY_worker_niceness=0" in (CLUSTER / "Dockerfile").read_text().splitlines()
