"""Child manifests: resources, selectors, tolerations, owner references, secret references."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from fmbench_k8s.api import Benchmark, parse_benchmark
from fmbench_k8s.contract.instances import UnknownInstanceTypeError, shape_of
from fmbench_k8s.operator import builders
from fmbench_k8s.operator.builders import OperatorConfig
from tests.corpus import REPO

CFG = OperatorConfig(image="example.com/fmbench-k8s:test")
UID = "0f6c1f9e-aaaa-bbbb-cccc-000000000001"


def _bench(name: str = "crds/samples/vllm-gpu.yaml", namespace: str = "team-a") -> Benchmark:
    doc = yaml.safe_load((REPO / name).read_text())
    doc["metadata"]["namespace"] = namespace
    return parse_benchmark(doc)


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return container


def test_gpu_server_requests_the_instance_gpus_and_tolerates_the_gpu_taint() -> None:
    bench = _bench()
    dep = builders.server_deployment(bench, bench.spec.variants[1], UID, CFG)
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g6e.2xlarge"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    res = _container(dep)["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "1" and res["requests"]["nvidia.com/gpu"] == "1"
    assert res["requests"]["cpu"] == "6" and res["requests"]["memory"] == "51Gi"
    assert dep["metadata"]["ownerReferences"][0]["uid"] == UID
    assert dep["metadata"]["ownerReferences"][0]["controller"] is True
    assert dep["metadata"]["namespace"] == "team-a"
    assert _container(dep)["image"].startswith("vllm/vllm-openai:")
    assert {"name": "dshm", "mountPath": "/dev/shm"} in _container(dep)["volumeMounts"]


def test_the_hf_token_is_a_secret_reference_never_a_value() -> None:
    bench = _bench()
    env = _container(builders.server_deployment(bench, bench.spec.variants[0], UID, CFG))["env"]
    token = next(e for e in env if e["name"] == "HF_TOKEN")
    assert token == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}


def test_neuron_server_requests_neuron_devices() -> None:
    bench = _bench("crds/samples/neuron-inf2.yaml")
    dep = builders.server_deployment(bench, bench.spec.variants[0], UID, CFG)
    res = _container(dep)["resources"]
    assert res["limits"]["aws.amazon.com/neuron"] == "1"
    assert "nvidia.com/gpu" not in res["limits"]
    tolerations = dep["spec"]["template"]["spec"]["tolerations"]
    assert tolerations[0]["key"] == "aws.amazon.com/neuron"


def test_variant_overrides_are_merged() -> None:
    doc = yaml.safe_load((REPO / "crds/samples/vllm-gpu.yaml").read_text())
    doc["spec"]["variants"][0].update(
        accelerators=0,
        image="my/vllm:dev",
        nodeSelector={"eks.amazonaws.com/nodegroup": "gpu-a"},
        tolerations=[{"key": "team", "operator": "Equal", "value": "a", "effect": "NoSchedule"}],
        env=[{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}],
    )
    bench = parse_benchmark(doc)
    dep = builders.server_deployment(bench, bench.spec.variants[0], UID, CFG)
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["eks.amazonaws.com/nodegroup"] == "gpu-a"
    assert {"key": "team", "operator": "Equal", "value": "a", "effect": "NoSchedule"} in pod["tolerations"]
    container = _container(dep)
    assert container["image"] == "my/vllm:dev"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert {"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"} in container["env"]
    assert container["args"][-2:] == ["--max-model-len", "8192"]


def test_simulator_runs_the_project_image_as_non_root_without_accelerators() -> None:
    bench = _bench("crds/samples/simulator-cluster.yaml")
    dep = builders.server_deployment(bench, bench.spec.variants[0], UID, CFG)
    container = _container(dep)
    assert container["image"] == CFG.image
    assert container["command"] == ["fmbench-k8s", "simulate"]
    assert "--profile" in container["args"] and "g5.2xlarge" in container["args"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["securityContext"]["runAsNonRoot"] is True


def test_loadgen_jobs_pass_endpoint_plan_and_storage_explicitly() -> None:
    bench = _bench()
    v = bench.spec.variants[0]
    master = builders.loadgen_master_job(bench, v, UID, "run1", CFG)
    args = _container(master)["args"]
    assert args[:2] == ["loadgen", "master"]
    assert args[args.index("--endpoint-url") + 1] == "http://llama31-8b-vllm-gpu-g5-vllm-server.team-a.svc:8000/v1"
    assert args[args.index("--output") + 1] == "s3://my-results/fmbench/team-a/llama31-8b-vllm-gpu/run1"
    assert args[args.index("--expect-workers") + 1] == "4"
    assert args[args.index("--ready-timeout") + 1] == "900"  # a crashed model server reloads its weights
    workers = builders.loadgen_workers_job(bench, v, UID, "run1", CFG)
    assert workers["spec"]["parallelism"] == 4 and workers["spec"]["completions"] == 4
    wargs = _container(workers)["args"]
    assert wargs[wargs.index("--master-host") + 1] == "llama31-8b-vllm-gpu-g5-vllm-lg-master.team-a.svc"
    for job in (master, workers):
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "llama31-8b-vllm-gpu-runner"
        assert _container(job)["securityContext"]["readOnlyRootFilesystem"] is True


def test_endpoint_variants_get_no_server_and_no_endpoint_url() -> None:
    bench = _bench("crds/samples/bedrock-sagemaker.yaml")
    kinds = [c["kind"] for c in builders.server_children(bench, UID, CFG)]
    assert kinds == ["ServiceAccount", "ConfigMap"]
    args = _container(builders.loadgen_master_job(bench, bench.spec.variants[0], UID, "r", CFG))["args"]
    assert "--endpoint-url" not in args
    assert "--ready-timeout" not in args  # a wrong URL fails within the default 60 s


SCRAPING = OperatorConfig(
    image="example.com/fmbench-k8s:test", scrape_endpoints=True, monitor_labels=(("release", "kps"),)
)


def test_an_http_endpoints_metrics_are_scraped_with_the_labels_the_analysis_selects_by() -> None:
    bench = _bench("crds/samples/openai-endpoint.yaml")
    children = builders.server_children(bench, UID, SCRAPING)
    scrape = next(c for c in children if c["kind"] == "ScrapeConfig")
    assert scrape["apiVersion"] == "monitoring.coreos.com/v1alpha1"
    assert scrape["metadata"]["name"] == "my-vllm-my-vllm-metrics"
    assert scrape["metadata"]["labels"]["release"] == "kps"  # what the Prometheus' selector picks up
    assert scrape["metadata"]["ownerReferences"][0]["uid"] == UID
    assert scrape["spec"] == {
        "scheme": "HTTP",
        "metricsPath": "/metrics",
        "scrapeInterval": "15s",
        "staticConfigs": [{"targets": ["vllm.default:8000"], "labels": {"benchmark": "my-vllm", "variant": "my-vllm"}}],
    }


def test_an_explicit_metrics_url_is_scraped_as_given() -> None:
    doc = yaml.safe_load((REPO / "crds/samples/openai-endpoint.yaml").read_text())
    doc["spec"]["variants"][0]["endpoint"]["metricsUrl"] = "https://u:secret@metrics.example.com:9443/engine/metrics"
    scrape = builders.endpoint_scrape_config(parse_benchmark(doc), parse_benchmark(doc).spec.variants[0], UID, SCRAPING)
    assert (scrape["spec"]["scheme"], scrape["spec"]["metricsPath"]) == ("HTTPS", "/engine/metrics")
    assert scrape["spec"]["staticConfigs"][0]["targets"] == ["metrics.example.com:9443"]  # no credentials
    assert "secret" not in json.dumps(scrape)


def test_no_scrape_where_it_is_off_or_there_is_nothing_to_scrape() -> None:
    doc = yaml.safe_load((REPO / "crds/samples/openai-endpoint.yaml").read_text())
    assert builders.scraped_endpoints(parse_benchmark(doc), CFG) == []  # the chart's monitoring.endpoints off
    doc["spec"]["variants"][0]["endpoint"]["scrapeMetrics"] = False
    assert builders.scraped_endpoints(parse_benchmark(doc), SCRAPING) == []
    # Bedrock and SageMaker have no /metrics; deployed engines are scraped through the chart's PodMonitor.
    assert builders.scraped_endpoints(_bench("crds/samples/bedrock-sagemaker.yaml"), SCRAPING) == []
    assert builders.scraped_endpoints(_bench(), SCRAPING) == []


def test_a_configmap_dataset_is_mounted_into_the_workers_where_they_read_it() -> None:
    doc = yaml.safe_load((REPO / "crds/samples/simulator-cluster.yaml").read_text())
    doc["spec"]["workload"]["dataset"] = {"uri": "configmap://prompts.v2/data.jsonl", "promptField": "text"}
    bench = parse_benchmark(doc)
    v = bench.spec.variants[0]
    worker = builders.loadgen_workers_job(bench, v, UID, "r", CFG)["spec"]["template"]["spec"]
    assert {
        "name": "dataset",
        "configMap": {"name": "prompts.v2", "items": [{"key": "data.jsonl", "path": "data.jsonl"}]},
    } in worker["volumes"]
    mount = {"name": "dataset", "mountPath": "/etc/fmbench-datasets/prompts.v2", "readOnly": True}
    assert mount in worker["containers"][0]["volumeMounts"]
    # where the worker's own reader looks (loadgen/datasets.py), nothing else
    from fmbench_k8s.contract.layout import DATASETS_DIR

    assert mount["mountPath"] == f"{DATASETS_DIR}/prompts.v2"
    master = builders.loadgen_master_job(bench, v, UID, "r", CFG)["spec"]["template"]["spec"]
    assert [vol["name"] for vol in master["volumes"]] == ["spec"]  # the master reads no prompt


def test_analysis_job_reports_through_its_termination_message() -> None:
    bench = _bench()
    job = builders.analysis_job(bench, UID, "run1", CFG)
    container = _container(job)
    assert container["args"][0] == "analyze"
    assert container["args"][container["args"].index("--summary-file") + 1] == "/dev/termination-log"
    assert "--prometheus-url" in container["args"]


def test_child_names_are_deterministic_and_fit_a_dns_label() -> None:
    long = "x" * 60
    name = builders.child_name(long, "variant-with-a-long-name", "lg-workers")
    assert len(name) <= 63
    assert name == builders.child_name(long, "variant-with-a-long-name", "lg-workers")
    assert name != builders.child_name(long, "variant-with-a-long-name", "lg-master")


def test_cluster_runs_need_s3() -> None:
    bench = _bench("examples/quickstart.yaml")
    with pytest.raises(ValueError, match=r"spec.report.s3: required on a cluster"):
        builders.run_uri(bench, "r")


def test_catalog() -> None:
    assert shape_of("p5.48xlarge").accelerators == 8
    assert shape_of("ml.g5.12xlarge").accelerators == 4
    assert shape_of("trn1.32xlarge").resource == "aws.amazon.com/neuron"
    with pytest.raises(UnknownInstanceTypeError, match="known families"):
        shape_of("x9.huge")


def test_an_endpoint_api_key_reaches_the_load_generators_as_a_secret_reference() -> None:
    doc = yaml.safe_load((REPO / "crds/samples/openai-endpoint.yaml").read_text())
    doc["spec"]["variants"][0]["endpoint"]["apiKeySecretRef"] = {"name": "openai", "key": "api-key"}
    doc["spec"]["report"] = {"s3": {"bucket": "results"}}
    bench = parse_benchmark(doc)
    for job in (
        builders.loadgen_master_job(bench, bench.spec.variants[0], UID, "r", CFG),
        builders.loadgen_workers_job(bench, bench.spec.variants[0], UID, "r", CFG),
    ):
        env = {e["name"]: e for e in _container(job)["env"]}
        assert env["FMBENCH_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "openai", "key": "api-key"}}
        assert "value" not in env["FMBENCH_API_KEY"]


def test_the_charts_runner_settings_reach_every_pod_of_a_run() -> None:
    from fmbench_k8s.operator.handlers import config_from_env

    small = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}
    env = {
        "FMBENCH_IMAGE": "registry.example/fmbench-k8s:1",
        "FMBENCH_IMAGE_PULL_SECRETS": "regcred, other",
        "FMBENCH_RUNNER_RESOURCES": json.dumps({"loadgenWorker": small, "simulator": small}),
        "FMBENCH_RUNNER_ENV": json.dumps([{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]),
    }
    cfg, _, _ = config_from_env(env)
    bench = _bench("crds/samples/simulator-cluster.yaml")
    v = bench.spec.variants[0]
    server = builders.server_deployment(bench, v, UID, cfg)["spec"]["template"]["spec"]
    worker = builders.loadgen_workers_job(bench, v, UID, "r", cfg)["spec"]["template"]["spec"]
    master = builders.loadgen_master_job(bench, v, UID, "r", cfg)["spec"]["template"]["spec"]
    analysis = builders.analysis_job(bench, UID, "r", cfg)["spec"]["template"]["spec"]
    for pod in (server, worker, master, analysis):
        assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]
        assert pod["containers"][0]["image"] == "registry.example/fmbench-k8s:1"
    assert server["containers"][0]["resources"] == small and worker["containers"][0]["resources"] == small
    assert master["containers"][0]["resources"] == builders.DEFAULT_RESOURCES["loadgenMaster"]  # not given: default
    for pod in (worker, master, analysis):
        assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in pod["containers"][0]["env"]
    # A simulator is not pinned to the GPU instance type it plays, nor does it take a GPU.
    assert server["nodeSelector"] == {} and server["tolerations"] == []
    with pytest.raises(ValueError, match="FMBENCH_RUNNER_RESOURCES"):
        config_from_env({"FMBENCH_RUNNER_RESOURCES": json.dumps({"gpu": small})})


@pytest.mark.parametrize(
    ("engine", "instance_type", "expected"),
    [
        ("vllm", "g5.12xlarge", ["--tensor-parallel-size", "4", "--revision", "r1"]),  # 4 A10G
        ("sglang", "g5.12xlarge", ["--tp-size", "4", "--revision", "r1"]),
        ("tgi", "g5.12xlarge", ["--num-shard", "4", "--revision", "r1"]),
        ("neuronx-vllm", "inf2.48xlarge", ["--tensor-parallel-size", "24", "--revision", "r1"]),  # 12 devices × 2 cores
        ("vllm", "g6e.2xlarge", ["--revision", "r1"]),  # one GPU: no tensor parallelism
    ],
)
def test_tensor_parallelism_spans_the_instance_and_the_revision_is_served(
    engine: str, instance_type: str, expected: list[str]
) -> None:
    doc = yaml.safe_load((REPO / "crds/samples/vllm-gpu.yaml").read_text())
    doc["spec"]["model"]["revision"] = "r1"
    doc["spec"]["variants"] = [{"name": "v", "engine": engine, "instanceType": instance_type}]
    bench = parse_benchmark(doc)
    container = _container(builders.server_deployment(bench, bench.spec.variants[0], UID, CFG))
    assert container["args"][-len(expected) :] == expected
    assert "HF_REVISION" not in {e["name"] for e in container["env"]}  # no engine reads it


@pytest.mark.parametrize(
    ("engine", "instance_type", "env"),
    [
        ("vllm", "g6e.2xlarge", {"HF_HOME": "/model-cache/huggingface"}),
        ("tgi", "g6e.2xlarge", {"HF_HOME": "/model-cache/huggingface"}),
        (
            "neuronx-vllm",
            "inf2.8xlarge",
            {"HF_HOME": "/model-cache/huggingface", "NEURON_COMPILE_CACHE_URL": "/model-cache/neuron-compile-cache"},
        ),
    ],
)
def test_a_model_cache_keeps_downloads_and_compiled_graphs_on_the_claim(
    engine: str, instance_type: str, env: dict[str, str]
) -> None:
    doc = yaml.safe_load((REPO / "crds/samples/vllm-gpu.yaml").read_text())
    doc["spec"]["model"]["cache"] = {"claimName": "weights"}
    doc["spec"]["variants"] = [{"name": "v", "engine": engine, "instanceType": instance_type}]
    bench = parse_benchmark(doc)
    pod = builders.server_deployment(bench, bench.spec.variants[0], UID, CFG)["spec"]["template"]["spec"]
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "weights"}} in pod["volumes"]
    container = pod["containers"][0]
    assert {"name": "model-cache", "mountPath": "/model-cache"} in container["volumeMounts"]
    given = {e["name"]: e.get("value") for e in container["env"]}
    assert {k: given.get(k) for k in env} == env


def test_no_cache_no_volume_and_the_simulator_never_mounts_one() -> None:
    bench = _bench()
    pod = builders.server_deployment(bench, bench.spec.variants[0], UID, CFG)["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["dshm"]
    assert "HF_HOME" not in {e["name"] for e in pod["containers"][0]["env"]}
    doc = yaml.safe_load((REPO / "crds/samples/simulator-cluster.yaml").read_text())
    doc["spec"]["model"] = {"name": "org/model", "cache": {"claimName": "weights"}}
    sim = parse_benchmark(doc)
    pod = builders.server_deployment(sim, sim.spec.variants[0], UID, CFG)["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["dshm"]


def test_djl_lmi_reads_its_settings_from_the_environment() -> None:
    doc = yaml.safe_load((REPO / "crds/samples/vllm-gpu.yaml").read_text())
    doc["spec"]["model"]["revision"] = "r1"
    doc["spec"]["variants"] = [{"name": "v", "engine": "djl-lmi", "instanceType": "g5.12xlarge"}]
    bench = parse_benchmark(doc)
    env = {
        e["name"]: e.get("value")
        for e in _container(builders.server_deployment(bench, bench.spec.variants[0], UID, CFG))["env"]
    }
    assert (env["HF_MODEL_ID"], env["OPTION_TENSOR_PARALLEL_DEGREE"], env["OPTION_REVISION"]) == (
        bench.spec.model.name if bench.spec.model else None, "4", "r1")  # fmt: skip


def _kubelet_expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's expansion of args and env values (k8s.io/kubernetes/third_party/forked/golang/
    expansion): ``$$`` is ``$``, ``$(NAME)`` of a variable the container has is its value, the rest
    stays as written."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and ")" in text[i:]:
            end = text.index(")", i)
            name = text[i + 2 : end]
            out.append(env.get(name, text[i : end + 1]))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def test_spec_strings_reach_every_container_literally_so_no_secret_is_expanded_into_them() -> None:
    """A prefix of ``$(FMBENCH_API_KEY)`` once put the API key into S3 keys, logs and the status."""
    doc = yaml.safe_load((REPO / "crds/samples/vllm-gpu.yaml").read_text())
    doc["metadata"]["namespace"] = "team-a"
    trap = "$(FMBENCH_API_KEY)$(HF_TOKEN)$(AWS_REGION)"
    doc["spec"]["report"]["s3"].update(prefix=f"runs/{trap}/", endpointUrl=f"http://s3.local:9000/{trap}")
    doc["spec"]["model"]["name"] = f"org/model-{trap}"
    variant = doc["spec"]["variants"][0]
    variant.update(args=[f"--served-model-name={trap}"], env=[{"name": "EXTRA", "value": trap}])
    doc["spec"]["variants"].append({"name": "ext", "endpoint": {
        "api": "openai-chat", "url": "https://api.example.com/v1", "model": trap,
        "apiKeySecretRef": {"name": "openai", "key": "key"}}})  # fmt: skip
    bench = parse_benchmark(doc)
    children = builders.server_children(bench, UID, CFG) + builders.data_plane_children(bench, UID, "r1", CFG)
    children.append(builders.analysis_job(bench, UID, "r1", CFG))
    pods = [o["spec"]["template"]["spec"] for o in children if o["kind"] in ("Deployment", "Job")]
    containers = [c for pod in pods for c in pod["containers"]]
    variants = bench.spec.variants
    assert len(containers) == sum(v.engine is not None for v in variants) + 2 * len(variants) + 1
    seen = []
    for c in containers:
        env = {e["name"]: "SECRET" for e in c.get("env", [])}  # every variable, as the kubelet would have it
        expanded = [_kubelet_expand(a, env) for a in c["args"]]
        expanded += [_kubelet_expand(e["value"], env) for e in c.get("env", []) if "value" in e]
        assert not [x for x in expanded if "SECRET" in x], c["name"]
        seen += [x for x in expanded if trap in x]
    # ... and each string still arrives as written: the prefix in the run's URI, the model, the extras.
    assert any(f"s3://my-results/runs/{trap}/team-a/" in x for x in seen)
    assert f"org/model-{trap}" in seen and f"--served-model-name={trap}" in seen and trap in seen
    assert f"http://s3.local:9000/{trap}" in seen


def test_model_server_pods_get_no_api_token_no_capabilities_and_no_service_links() -> None:
    for sample, index in (("crds/samples/vllm-gpu.yaml", 0), ("crds/samples/simulator-cluster.yaml", 0)):
        bench = _bench(sample)
        pod = builders.server_deployment(bench, bench.spec.variants[index], UID, CFG)["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
        security = pod["containers"][0]["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize(
    ("priced_as", "selected"), [("on-demand", "on-demand"), ("spot", "spot"), ("savings-plan", "on-demand")]
)
def test_with_karpenter_model_servers_select_the_capacity_type_they_are_priced_at(
    priced_as: str, selected: str
) -> None:
    doc = yaml.safe_load((REPO / "crds/samples/vllm-gpu.yaml").read_text())
    doc["spec"]["analysis"] = {"pricing": {"capacityType": priced_as}}
    doc["spec"]["variants"].append({"name": "sim", "instanceType": "g5.2xlarge", "engine": "simulator"})
    bench = parse_benchmark(doc)
    with_karpenter = OperatorConfig(image="example.com/fmbench-k8s:test", karpenter=True)
    gpu, sim = bench.spec.variants[0], bench.spec.variants[-1]
    pod = builders.server_deployment(bench, gpu, UID, with_karpenter)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "g5.2xlarge",
        "karpenter.sh/capacity-type": selected,
    }
    # a simulator runs anywhere; without the chart's karpenter.enabled nothing is selected
    assert builders.server_deployment(bench, sim, UID, with_karpenter)["spec"]["template"]["spec"]["nodeSelector"] == {}
    plain = builders.server_deployment(bench, gpu, UID, CFG)["spec"]["template"]["spec"]["nodeSelector"]
    assert "karpenter.sh/capacity-type" not in plain


def test_karpenter_never_moves_a_runs_pods() -> None:
    bench = _bench()
    v = bench.spec.variants[0]
    pods = [
        builders.server_deployment(bench, v, UID, CFG),
        builders.loadgen_master_job(bench, v, UID, "r", CFG),
        builders.loadgen_workers_job(bench, v, UID, "r", CFG),
        builders.analysis_job(bench, UID, "r", CFG),
    ]
    for obj in pods:
        assert obj["spec"]["template"]["metadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}


def test_the_capacity_type_of_a_node_is_karpenters_or_its_node_groups() -> None:
    from fmbench_k8s.operator.observe import capacity_type

    assert capacity_type({"karpenter.sh/capacity-type": "spot"}) == "spot"
    assert capacity_type({"eks.amazonaws.com/capacityType": "ON_DEMAND"}) == "on-demand"
    assert capacity_type({"eks.amazonaws.com/capacityType": "SPOT"}) == "spot"
    assert capacity_type({"node.kubernetes.io/instance-type": "g5.2xlarge"}) is None


def test_an_llm_judges_key_reaches_the_analysis_as_a_secret_reference_only() -> None:
    doc = yaml.safe_load((REPO / "crds/samples/accuracy-floor.yaml").read_text())
    judge = {"name": "judge-1", "url": "https://judge.example.com/v1", "model": "m",
             "apiKeySecretRef": {"name": "judge-key", "key": "token"}}  # fmt: skip
    doc["spec"]["evaluation"] = {"metrics": ["f1", "judge"], "judging": {"judges": [judge]}}
    env = _container(builders.analysis_job(parse_benchmark(doc), UID, "r", CFG))["env"]
    assert {
        "name": "FMBENCH_JUDGE_KEY_JUDGE_1",
        "valueFrom": {"secretKeyRef": {"name": "judge-key", "key": "token"}},
    } in env
