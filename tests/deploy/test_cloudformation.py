"""The ECS CloudFormation template: generated from one definition, linted by cfn-lint, its IAM
exactly as narrow as the issue asks, its parameter patterns run through java.util.regex (the
engine CloudFormation's AllowedPattern uses), and created for real in moto's CloudFormation: by
the create-stack and update-stack commands of docs/operations.md as written (the seed's five
parameters, then a new ImageTag and DataHubBaseUrl), and with two secrets and two environment
variables to check that the list expansion yields what it should.

moto differences, handled where they show: it leaves AWS::NoValue in lists as None (real
CloudFormation drops the item), has no CloudFormation support for AWS::SecretsManager::Secret (so
the token's ValueFrom is checked on the template instead of on the created task definition),
attaches no ManagedPolicyArns and does not enforce AllowedPattern (both checked on the template).
On update-stack, moto re-creates the resources that name a changed parameter (the task definition)
but not those that only refer to a re-created resource, so its service keeps the old task
definition (CloudFormation updates the service, whose TaskDefinition property changed); and it
registers the new revision with the template's PascalCase keys, which describe_task_definition
leaves out, so the updated container is read from moto's own record (updated_container()).
"""
from __future__ import annotations

import ast
import base64
import json
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import boto3
import pytest
import yaml
from moto import mock_aws

from executor.healthcheck import health_url
from executor.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "deploy" / "cloudformation"
TEMPLATE = FOLDER / "datahub-executor.ecs.template.yaml"
CFN_LINT = str(Path(sys.executable).parent / "cfn-lint")
OPERATIONS = ROOT / "docs" / "operations.md"
SEED_PARAMETERS = {"ExecutorPoolId", "VPCID", "SubnetID", "DataHubBaseUrl", "DataHubAccessToken"}
ACCOUNT_QUEUES = "arn:aws:sqs:us-east-1:123456789012:"  # moto's account, the stacks' region
QUEUE_ARN = ACCOUNT_QUEUES + "dhx-a1b2c3d4-remote"
DERIVED_QUEUE_ARNS = [ACCOUNT_QUEUES + "dhx-????????-remote", ACCOUNT_QUEUES + "dhx-????????-remote-monitors"]
DEFAULT_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/datahub-remote-executor"
SECRET_ARNS = {"DB_PASSWORD": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-pass-AbCdEf",
               "API_KEY": "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/api.key-GhIjKl"}
SQS_ACTIONS = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
FIXED_VARIABLES = 7  # what the template sets itself in Environment, besides the user's entries
# Fargate's task sizes: cpu units -> the memory sizes (MiB) allowed with it.
FARGATE_MEMORY = {256: {512, 1024, 2048}, 512: set(range(1024, 4097, 1024)), 1024: set(range(2048, 8193, 1024)),
                  2048: set(range(4096, 16385, 1024)), 4096: set(range(8192, 30721, 1024)),
                  8192: set(range(16384, 61441, 4096)), 16384: set(range(32768, 122881, 8192))}


def load() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())


def container(template: dict) -> dict:
    (only,) = template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    return only


def walk(node, path: str = "") -> list[tuple[str, object]]:
    """Every (path, value) below the node, e.g. ("/Resources/TaskRole/Properties", {...})."""
    if isinstance(node, dict):
        items = [(f"{path}/{key}", value) for key, value in node.items()]
    elif isinstance(node, list):
        items = [(f"{path}/{index}", value) for index, value in enumerate(node)]
    else:
        return []
    return [hit for item in items for hit in (item, *walk(item[1], item[0]))]


def refs(node) -> list[tuple[str, str]]:
    """Every (path, name) of a {"Ref": name} below the node."""
    return [(path.removesuffix("/Ref"), value) for path, value in walk(node) if path.endswith("/Ref")]


def names_used(node) -> set[str]:
    """Parameters and resources a node draws on: by Ref, or as ${X} in an Fn::Sub."""
    subs = [value for path, value in walk(node) if path.endswith("/Fn::Sub")]
    return {name for _, name in refs(node)} | {name for text in subs for name in re.findall(r"\$\{([^}]+)\}", text)}


def strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (key, *strings(value))]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CFN_LINT, str(path)], check=False, capture_output=True, text=True, timeout=180)


def test_the_committed_template_is_what_the_generator_writes():
    generated = subprocess.run([sys.executable, str(FOLDER / "generate.py")], capture_output=True, text=True,
                               check=True, timeout=60).stdout
    assert TEMPLATE.read_text() == generated, "run: python deploy/cloudformation/generate.py > " + str(TEMPLATE)


def test_cfn_lint_finds_nothing():
    result = lint(TEMPLATE)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout


def test_cfn_lint_really_checks_it(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("${PoolQueueArn}-monitors", "${PoolQueueArnTypo}-monitors"))
    result = lint(broken)
    assert result.returncode != 0 and "PoolQueueArnTypo" in result.stdout


def test_the_seeds_parameters_are_there_and_constrained():
    parameters = load()["Parameters"]
    for name in ("VPCID", "SubnetID", "DataHubAccessToken", "DataHubBaseUrl", "ExecutorPoolId", "ImageRepository",
                 "ImageTag", "SecretNames", "EnvironmentVariables", "PoolQueueArn", "AssignPublicIp", "TaskSize"):
        assert name in parameters
    assert parameters["VPCID"]["Type"] == "AWS::EC2::VPC::Id"
    assert parameters["SubnetID"]["Type"] == "AWS::EC2::Subnet::Id"
    assert parameters["DataHubAccessToken"]["NoEcho"] is True and "Default" not in parameters["DataHubAccessToken"]
    assert parameters["ImageTag"]["Default"] == "latest", "the seed: defaults to latest"
    assert parameters["AssignPublicIp"]["AllowedValues"] == ["ENABLED", "DISABLED"]
    for name in ("DataHubBaseUrl", "ExecutorPoolId", "PoolQueueArn", "SecretNames", "EnvironmentVariables",
                 "ImageRepository"):
        assert parameters[name].get("AllowedPattern"), name


def test_the_seeds_five_parameters_are_the_only_ones_without_a_default():
    template = load()
    without_default = {name for name, spec in template["Parameters"].items() if "Default" not in spec}
    assert without_default == SEED_PARAMETERS
    (required, optional) = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    assert set(required["Parameters"]) == SEED_PARAMETERS, "the console lists them first"
    assert set(required["Parameters"]) | set(optional["Parameters"]) == set(template["Parameters"])


def test_the_url_the_seeds_update_step_calls_datahubgmsurl_is_datahubbaseurl():
    """The seed's create-stack names DataHubBaseUrl, its update step DatahubGmsURL. One parameter,
    under the create-stack's name (CloudFormation refuses an update naming a parameter the template
    does not have); its description and the docs give the other name."""
    parameters = load()["Parameters"]
    assert "DatahubGmsURL" not in parameters
    assert "DatahubGmsURL" in parameters["DataHubBaseUrl"]["Description"]
    assert "DatahubGmsURL" in OPERATIONS.read_text()


def test_task_sizes_are_valid_fargate_pairs_and_default_to_4_vcpu_16_gib():
    template = load()
    size = template["Parameters"]["TaskSize"]
    sizes = template["Mappings"]["TaskSizes"]
    assert size["Default"] == "4vCPU-16GB" and sizes["4vCPU-16GB"] == {"Cpu": "4096", "Memory": "16384"}
    assert set(size["AllowedValues"]) == set(sizes)
    for name, pair in sizes.items():
        assert int(pair["Memory"]) in FARGATE_MEMORY[int(pair["Cpu"])], name


# (parameter, value, allowed). Whatever the pattern accepts must also be accepted by the
# executor where it parses the same value (the URL; pool ids: test_pool_id_rule.py).
PATTERN_CASES = [
    ("DataHubBaseUrl", "https://acme.acryl.io/gms", True),
    ("DataHubBaseUrl", "https://acme.acryl.io/gms/", True),
    ("DataHubBaseUrl", "http://datahub-gms.internal:8080/datahub/gms", True),
    ("DataHubBaseUrl", "https://acme.acryl.io", False),
    ("DataHubBaseUrl", "acme.acryl.io/gms", False),
    ("DataHubBaseUrl", "https://acme.acryl.io/gmsx", False),
    ("DataHubBaseUrl", "https://acme.acryl.io:0/gms", False),
    ("DataHubBaseUrl", "https://acme.acryl.io:99999/gms", False),
    ("DataHubBaseUrl", "https://acme.acryl.io:65536/gms", False),
    ("DataHubBaseUrl", "https://acme.acryl.io:abc/gms", False),
    ("DataHubBaseUrl", "https://[::1/gms", False),
    ("DataHubBaseUrl", "https://user@:443/gms", False),
    ("DataHubBaseUrl", "https://acme.acryl.io/gms/#frag", False),
    ("DataHubBaseUrl", "https://acme.acryl.io:65535/gms", True),
    ("DataHubBaseUrl", "https://[::1]:8080/gms", True),
    ("DataHubBaseUrl", "https://acme.acryl.io/gms#frag", True),
    ("DataHubBaseUrl", "https://acme.acryl.io/gms?x=1", True),
    ("PoolQueueArn", "", True),
    ("PoolQueueArn", QUEUE_ARN, True),
    ("PoolQueueArn", "arn:aws-cn:sqs:cn-north-1:210987654321:dhx-a1b2c3d4-remote", True),
    ("PoolQueueArn", ACCOUNT_QUEUES + "q" * 71, True),
    ("PoolQueueArn", ACCOUNT_QUEUES + "q" * 72, False),  # its -monitors queue would pass SQS's 80
    ("PoolQueueArn", "arn:aws:sqs:us-east-1:123456789012:pool.fifo", False),  # the control plane makes none
    ("PoolQueueArn", "arn:aws:sqs:us-east-1:123456789012:*", False),
    ("PoolQueueArn", DERIVED_QUEUE_ARNS[0], False),
    ("PoolQueueArn", "https://sqs.us-east-1.amazonaws.com/123456789012/q", False),
    ("ImageRepository", "123456789012.dkr.ecr.us-east-1.amazonaws.com/datahub-remote-executor", True),
    ("ImageRepository", "registry.internal:5000/data/datahub-remote-executor", True),
    ("ImageRepository", "datahub-remote-executor:v1.2", False),
    ("ImageRepository", "", True),
    ("SecretNames", "", True),
    ("SecretNames", ",".join(f"{k}={v}" for k, v in SECRET_ARNS.items()), True),
    ("SecretNames", ",".join(f"S{i}={SECRET_ARNS['API_KEY']}" for i in range(10)), True),
    ("SecretNames", ",".join(f"S{i}={SECRET_ARNS['API_KEY']}" for i in range(11)), False),
    ("SecretNames", "DB=arn:aws:secretsmanager:us-east-1:123456789012:secret:*", False),
    ("SecretNames", "DB=arn:aws:secretsmanager:us-east-1:123456789012:secret:db-pass-??????", False),
    ("SecretNames", "DB=arn:aws:secretsmanager:us-east-1:123456789012:secret:db-pass", False),
    ("SecretNames", f"DB={SECRET_ARNS['DB_PASSWORD']}:password::", True),  # ECS's JSON key form
    ("SecretNames", f"DATAHUB_GMS_TOKEN={SECRET_ARNS['DB_PASSWORD']}", False),
    ("SecretNames", f"DATAHUB_GMS_TOKEN_2={SECRET_ARNS['DB_PASSWORD']}", True),
    ("SecretNames", f"../x={SECRET_ARNS['DB_PASSWORD']}", False),
    ("SecretNames", f"DB_PASSWORD,{SECRET_ARNS['DB_PASSWORD']}", False),
    ("EnvironmentVariables", "", True),
    ("EnvironmentVariables", "DATAHUB_EXECUTOR_LOG_LEVEL=DEBUG,FOO=", True),
    ("EnvironmentVariables", ",".join(f"V{i}=x" for i in range(10)), True),
    ("EnvironmentVariables", ",".join(f"V{i}=x" for i in range(11)), False),
    ("EnvironmentVariables", "PIP_INDEX_URL=https://pypi.internal/simple?a=b", False),
    ("EnvironmentVariables", "DATAHUB_GMS_TOKEN=in-clear", False),
    ("EnvironmentVariables", "DATAHUB_EXECUTOR_DRAIN_TIMEOUT=300", False),
    ("EnvironmentVariables", "FOO=1,DATAHUB_GMS_URL=https://other/gms", False),
]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def java_matches(tmp_path: Path, pairs: list[tuple[str, str]]) -> list[bool] | None:
    """Pattern.matches(pattern, value) for each pair, by a real JVM; None without java here."""
    if shutil.which("java") is None:
        return None
    source = tmp_path / "Matches.java"
    source.write_text(
        "import java.io.*; import java.util.Base64; import java.util.regex.Pattern;\n"
        "public class Matches { static String text(String b) throws IOException {\n"
        "    return new String(Base64.getDecoder().decode(b), \"UTF-8\"); }\n"
        "  public static void main(String[] a) throws IOException {\n"
        "  BufferedReader in = new BufferedReader(new InputStreamReader(System.in, \"UTF-8\")); String line;\n"
        "  while ((line = in.readLine()) != null) { String[] p = line.split(\" \", -1);\n"
        "    System.out.println(Pattern.matches(text(p[0]), text(p[1]))); } } }\n")
    # Base64, so that a value may hold any character (a newline, a tab) and still be one line.
    lines = "".join(f"{b64(pattern)} {b64(value)}\n" for pattern, value in pairs)
    result = subprocess.run(["java", str(source)], input=lines, capture_output=True, text=True, check=True,
                            timeout=60)
    return [word == "true" for word in result.stdout.split()]


def test_parameter_patterns_accept_and_refuse_what_they_should_in_python_and_java(tmp_path):
    parameters = load()["Parameters"]
    pairs = [(parameters[name]["AllowedPattern"], value) for name, value, _ in PATTERN_CASES]
    expected = [allowed for _, _, allowed in PATTERN_CASES]
    assert [re.fullmatch(pattern, value) is not None for pattern, value in pairs] == expected
    in_java = java_matches(tmp_path, pairs)
    if in_java is not None:
        assert in_java == expected, [case for case, ok in zip(PATTERN_CASES, in_java) if ok != case[2]]
    parse_url = next(s.parse for s in SETTINGS if s.env == "DATAHUB_GMS_URL")
    for _, value, allowed in (case for case in PATTERN_CASES if case[0] == "DataHubBaseUrl"):
        try:
            parse_url(value)
        except ValueError:
            assert not allowed, f"the stack takes {value!r}, the executor refuses it at start"
        else:
            assert allowed, f"the executor takes {value!r}, the stack refuses it"
    if in_java is None:
        pytest.skip("no java here: patterns checked with Python's re only")


def test_the_token_reaches_the_container_only_through_a_secret():
    template = load()
    (where,) = [path for path, name in refs(template) if name == "DataHubAccessToken"]
    assert where == "/Resources/AccessTokenSecret/Properties/SecretString"
    elsewhere = {**template["Resources"], "AccessTokenSecret": None, "Outputs": template["Outputs"]}
    assert "DataHubAccessToken" not in json.dumps(elsewhere), "not by Fn::Sub either"
    assert template["Resources"]["AccessTokenSecret"]["Type"] == "AWS::SecretsManager::Secret"
    executor = container(template)
    assert {"Name": "DATAHUB_GMS_TOKEN", "ValueFrom": {"Ref": "AccessTokenSecret"}} in executor["Secrets"]
    assert "DATAHUB_GMS_TOKEN" not in [e.get("Name") for e in executor["Environment"]]


def test_the_task_role_may_do_exactly_what_the_executor_needs():
    template = load()
    role = template["Resources"]["TaskRole"]["Properties"]
    assert set(role) == {"AssumeRolePolicyDocument", "Policies"}, "no managed policies, no boundary tricks"
    (policy,) = role["Policies"]
    sqs, secrets = policy["PolicyDocument"]["Statement"]
    assert sqs["Effect"] == "Allow" and sqs["Action"] == SQS_ACTIONS
    condition, derived, given = sqs["Resource"]["Fn::If"]
    queue = "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:dhx-????????-${ExecutorPoolId}"
    assert condition == "DerivePoolQueues"
    assert derived == [{"Fn::Sub": queue}, {"Fn::Sub": queue + "-monitors"}], "this pool's two queues, no DLQ"
    assert given == [{"Fn::Sub": "${PoolQueueArn}"}, {"Fn::Sub": "${PoolQueueArn}-monitors"}]
    condition, statement, otherwise = secrets["Fn::If"]
    assert condition == "HasSecret1" and otherwise == {"Ref": "AWS::NoValue"}, "no secrets named, no statement"
    assert statement["Effect"] == "Allow" and statement["Action"] == "secretsmanager:GetSecretValue"
    assert names_used(statement["Resource"]) == {"SecretNames", "AWS::NoValue"}
    wildcards = [s for s in strings(role) if "*" in s or "?" in s]
    assert wildcards == [queue, queue + "-monitors"], "no wildcard in the task role but the installation's 8"


def iam_matches(resource: str, arn: str) -> bool:
    """IAM's resource matching: '*' any run of characters, '?' exactly one, the rest literally."""
    pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in resource)
    return re.fullmatch(pattern, arn, re.DOTALL) is not None


@pytest.mark.parametrize("queue, covered", [
    ("dhx-a1b2c3d4-remote", True),
    ("dhx-a1b2c3d4-remote-monitors", True),
    ("dhx-0f0f0f0f-remote", True),  # pool remote of another control plane installed in this account
    ("dhx-a1b2c3d4-remote-dlq", False),
    ("dhx-a1b2c3d4-remote-monitors-dlq", False),
    ("dhx-a1b2c3d4-remote2", False),
    ("dhx-a1b2c3d4-xremote", False),
    ("dhx-a1b2c3d4-emote", False),
    ("dhx-a1b2c3d4-x-remote", False),
    ("dhx-a1b2c3d-remote", False),
    ("dhx-a1b2c3d45-remote", False),
    ("dhx-a1b2c3d4-remote-monitors2", False),
])
def test_the_derived_queue_arns_cover_this_pools_two_queues_and_no_other(queue, covered):
    assert any(iam_matches(resource, ACCOUNT_QUEUES + queue) for resource in DERIVED_QUEUE_ARNS) == covered
    for elsewhere in ("arn:aws:sqs:eu-west-1:123456789012:", "arn:aws:sqs:us-east-1:210987654321:"):
        assert not any(iam_matches(resource, elsewhere + queue) for resource in DERIVED_QUEUE_ARNS)


def test_the_execution_role_may_pull_log_and_inject_the_token_and_the_named_secrets_only():
    role = load()["Resources"]["ExecutionRole"]["Properties"]
    assert role["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"}]
    (policy,) = role["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    token, *slots = statement["Resource"]
    assert token == {"Ref": "AccessTokenSecret"} and len(slots) == 10
    assert names_used(slots) == {"SecretNames", "AWS::NoValue"}
    assert not [s for s in strings(policy) if "*" in s]


def test_the_container_sets_only_executor_settings_and_leaves_the_sandbox_on_auto():
    template = load()
    executor = container(template)
    known = {s.env for s in SETTINGS}
    fixed = {e["Name"]: e["Value"] for e in executor["Environment"] if "Name" in e}
    secret_names = [s["Name"] for s in executor["Secrets"] if "Name" in s]
    assert len(fixed) == FIXED_VARIABLES and secret_names == ["DATAHUB_GMS_TOKEN"]
    assert set(fixed) | set(secret_names) <= known, "only settings the executor knows (the user's entries aside)"
    user_slots = [e for e in executor["Environment"] if "Name" not in e]
    assert len(user_slots) == 10 and all(set(slot) == {"Fn::If"} for slot in user_slots)
    assert "DATAHUB_EXECUTOR_SANDBOX_MODE" not in fixed, "auto: mode none on Fargate, said at start"
    assert fixed["DATAHUB_EXECUTOR_HEALTH_ADDRESS"] == "0.0.0.0:9087"
    assert executor["StopTimeout"] == 120, "Fargate's maximum"
    assert float(fixed["DATAHUB_EXECUTOR_DRAIN_TIMEOUT"]) < executor["StopTimeout"], "drain ends before SIGKILL"
    # --live: ECS replaces an unhealthy task, so the check fails only on what a restart mends.
    assert executor["HealthCheck"]["Command"] == ["CMD", "datahub-executor", "healthcheck", "--live"]
    assert health_url({k: v for k, v in fixed.items() if isinstance(v, str)}) == "http://127.0.0.1:9087/health"
    assert executor["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "LogGroup"}
    assert template["Resources"]["LogGroup"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_the_security_group_lets_nothing_in():
    resources = load()["Resources"]
    group = resources["SecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group and group["SecurityGroupEgress"]
    assert not [r for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"]


@pytest.fixture
def aws():
    with mock_aws(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # moto: "AWS::SecretsManager::Secret not supported"
        yield


TOKEN = "not-a-real-token-5f0c"


def network() -> dict[str, str]:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    return {"VPCID": vpc, "SubnetID": subnet}


def create_stack(secret_names: str, environment: str) -> dict[str, str]:
    parameters = {**network(), "DataHubBaseUrl": "https://acme.acryl.io/gms", "DataHubAccessToken": TOKEN,
                  "ExecutorPoolId": "remote", "PoolQueueArn": QUEUE_ARN, "ImageRepository": DEFAULT_IMAGE,
                  "SecretNames": secret_names, "EnvironmentVariables": environment}
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    cloudformation.create_stack(
        StackName="dhx", TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()])
    return stack("dhx", "CREATE_COMPLETE")["Outputs"]


def stack(name: str, status: str) -> dict:
    """The stack's outputs and parameters as dicts, once it has the status."""
    (described,) = boto3.client("cloudformation", region_name="us-east-1").describe_stacks(StackName=name)["Stacks"]
    assert described["StackStatus"] == status
    return {"Outputs": {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]},
            "Parameters": {p["ParameterKey"]: p["ParameterValue"] for p in described["Parameters"]}}


def created_task_definition() -> dict:
    ecs = boto3.client("ecs", region_name="us-east-1")
    (arn,) = ecs.list_task_definitions()["taskDefinitionArns"]
    return ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]


def updated_container() -> tuple[int, dict]:
    """The latest revision's number and its executor container, keys in the API's camelCase, from
    moto's record (see the module's docstring for why not from describe_task_definition)."""
    from moto.core.utils import pascal_to_camelcase, remap_nested_keys
    from moto.ecs.models import ecs_backends

    (revisions,) = ecs_backends["123456789012"]["us-east-1"].task_definitions.values()
    latest = max(revisions)
    (executor,) = remap_nested_keys(revisions[latest].container_definitions, pascal_to_camelcase)
    return latest, executor


def container_environment(executor: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in present(executor["environment"])}


def role_policies() -> dict[str, dict]:
    iam = boto3.client("iam", region_name="us-east-1")
    policies = {}
    for role in iam.list_roles()["Roles"]:
        for name in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
            document = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]
            # moto hands the stored document back as the repr of a dict (None for AWS::NoValue)
            if isinstance(document, str):
                document = ast.literal_eval(document)
            policies[role["RoleName"].rsplit("-", 2)[-2]] = document  # <stack>-<logical id>-<suffix>
    return policies


def present(items: list) -> list:
    return [item for item in items if item is not None]  # moto keeps AWS::NoValue as None


def test_a_created_stack_carries_two_secrets_and_two_variables_exactly(aws):
    outputs = create_stack(",".join(f"{k}={v}" for k, v in SECRET_ARNS.items()),
                           "DATAHUB_EXECUTOR_LOG_LEVEL=DEBUG,FOO=")
    assert set(outputs) == {"ClusterName", "ServiceName", "TaskRoleArn", "LogGroupName", "Image", "PoolQueueArns"}
    definition = created_task_definition()
    assert TOKEN not in json.dumps(definition, default=str), "the token is never in the task definition"
    (executor,) = definition["containerDefinitions"]
    assert executor["image"].endswith("/datahub-remote-executor:latest")
    secrets = {s["name"]: s.get("valueFrom") for s in present(executor["secrets"])}
    assert secrets == {"DATAHUB_GMS_TOKEN": None, **SECRET_ARNS}  # None: moto creates no token secret
    environment = {e["name"]: e["value"] for e in present(executor["environment"])}
    assert environment["DATAHUB_EXECUTOR_LOG_LEVEL"] == "DEBUG" and environment["FOO"] == ""
    assert environment["DATAHUB_EXECUTOR_POOL_ID"] == "remote"
    assert environment["DATAHUB_GMS_URL"] == "https://acme.acryl.io/gms"
    assert len(environment) == FIXED_VARIABLES + 2
    policies = role_policies()
    sqs, secrets_statement = present(policies["TaskRole"]["Statement"])
    assert sqs["Action"] == SQS_ACTIONS and sqs["Resource"] == [QUEUE_ARN, QUEUE_ARN + "-monitors"]
    assert outputs["PoolQueueArns"] == f"{QUEUE_ARN},{QUEUE_ARN}-monitors"
    assert secrets_statement["Action"] == "secretsmanager:GetSecretValue"
    assert present(secrets_statement["Resource"]) == list(SECRET_ARNS.values())
    (injection,) = policies["ExecutionRole"]["Statement"]
    assert present(injection["Resource"]) == list(SECRET_ARNS.values())  # + the token secret, None in moto
    (group,) = boto3.client("logs", region_name="us-east-1").describe_log_groups()["logGroups"]
    assert group["logGroupName"] == outputs["LogGroupName"] and group["retentionInDays"] == 30


def test_a_created_stack_without_secrets_gives_the_task_role_only_the_queue(aws):
    create_stack("", "")
    (executor,) = created_task_definition()["containerDefinitions"]
    assert [s["name"] for s in present(executor["secrets"])] == ["DATAHUB_GMS_TOKEN"]
    assert len(present(executor["environment"])) == FIXED_VARIABLES
    (only,) = present(role_policies()["TaskRole"]["Statement"])
    assert only["Action"] == SQS_ACTIONS and only["Resource"] == [QUEUE_ARN, QUEUE_ARN + "-monitors"]


def documented_command(action: str) -> list[str]:
    """The `aws cloudformation <action>` command of docs/operations.md, split as the shell would."""
    blocks = re.findall(r"```bash\n(.*?)```", OPERATIONS.read_text(), re.DOTALL)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()
             if f"cloudformation {action} " in line]
    assert len(lines) == 1, f"docs/operations.md should show one {action} command, has {len(lines)}"
    return shlex.split(lines[0])


def run_documented(action: str, placeholders: dict[str, str]) -> list[dict]:
    """Runs the documented command against moto, its <placeholders> filled in; returns its parameters."""
    argv = [placeholder_free(word, placeholders) for word in documented_command(action)]
    option = {word: argv[index + 1] for index, word in enumerate(argv[:-1]) if word.startswith("--")}
    assert option["--template-body"] == f"file://{TEMPLATE.relative_to(ROOT)}", "the repository's template"
    capabilities = argv[argv.index("--capabilities") + 1:]
    capabilities = capabilities[:next((i for i, w in enumerate(capabilities) if w.startswith("--")), None)]
    assert "CAPABILITY_NAMED_IAM" in capabilities, "the stack creates IAM roles"
    words = argv[argv.index("--parameters") + 1:]
    parameters = []
    for word in words[:next((i for i, w in enumerate(words) if w.startswith("--")), None)]:
        key, value = (part.split("=", 1) for part in word.split(",", 1))
        assert key[0] == "ParameterKey", word
        parameters.append({"ParameterKey": key[1], value[0]: value[1] if value[0] == "ParameterValue" else True})
    call = {"create-stack": "create_stack", "update-stack": "update_stack"}[action]
    getattr(boto3.client("cloudformation", region_name=option["--region"]), call)(
        StackName=option["--stack-name"], TemplateBody=TEMPLATE.read_text(), Capabilities=capabilities,
        Parameters=parameters)
    return parameters


def placeholder_free(word: str, placeholders: dict[str, str]) -> str:
    for placeholder, value in placeholders.items():
        word = word.replace(placeholder, value)
    return word


def test_the_documented_create_stack_with_the_seeds_five_parameters_creates_the_executor(aws):
    given = run_documented("create-stack", network_placeholders())
    assert {p["ParameterKey"] for p in given} == SEED_PARAMETERS
    created = stack("datahub-remote-executor", "CREATE_COMPLETE")
    assert created["Outputs"]["Image"] == DEFAULT_IMAGE + ":latest", "this account's ECR, ImageTag's default"
    assert created["Outputs"]["PoolQueueArns"] == ",".join(DERIVED_QUEUE_ARNS)
    (executor,) = created_task_definition()["containerDefinitions"]
    assert executor["image"] == DEFAULT_IMAGE + ":latest"
    environment = container_environment(executor)
    assert environment["DATAHUB_EXECUTOR_POOL_ID"] == "remote"
    assert environment["DATAHUB_GMS_URL"] == "https://acme.acryl.io/gms"
    (sqs,) = present(role_policies()["TaskRole"]["Statement"])
    assert sqs["Action"] == SQS_ACTIONS and sqs["Resource"] == DERIVED_QUEUE_ARNS


def network_placeholders() -> dict[str, str]:
    ids = network()
    return {"<your-vpc>": ids["VPCID"], "<your-subnet>": ids["SubnetID"], "<your-company>": "acme"}


def test_the_documented_update_stack_changes_the_image_and_url_and_keeps_the_rest(aws):
    placeholders = network_placeholders()
    run_documented("create-stack", placeholders)
    before = stack("datahub-remote-executor", "CREATE_COMPLETE")
    roles_before = role_policies()
    given = run_documented("update-stack", {**placeholders, "<your-company>": "acme-eu", "<new version>": "0.2.0"})
    assert {p["ParameterKey"] for p in given} == SEED_PARAMETERS | {"ImageTag"}
    after = stack("datahub-remote-executor", "UPDATE_COMPLETE")
    changed = {k for k in after["Parameters"] if after["Parameters"][k] != before["Parameters"][k]}
    assert changed == {"ImageTag", "DataHubBaseUrl"}
    assert after["Outputs"]["Image"] == DEFAULT_IMAGE + ":0.2.0"
    revision, executor = updated_container()
    assert revision == 2 and executor["image"] == DEFAULT_IMAGE + ":0.2.0"
    environment = container_environment(executor)
    assert environment["DATAHUB_GMS_URL"] == "https://acme-eu.acryl.io/gms"
    assert environment["DATAHUB_EXECUTOR_POOL_ID"] == "remote"
    assert role_policies() == roles_before, "the seed: the update keeps the IAM roles (and the secret)"
    # By construction, what such an update touches: only the task definition names the two
    # parameters, so the token secret, the roles, the log group and the cluster stay as they are
    # (CloudFormation then points the service at the new task definition: a rolling deployment).
    resources = load()["Resources"]
    assert {name for name, resource in resources.items()
            if names_used(resource) & {"ImageTag", "DataHubBaseUrl"}} == {"TaskDefinition"}


def test_update_stack_resets_what_it_does_not_name_as_the_docs_warn(aws):
    """update-stack (unlike the console) gives every parameter it does not name its default, so a
    variable set at create is lost unless the update names it with UsePreviousValue=true."""
    placeholders = network_placeholders()
    run_documented("create-stack", placeholders)
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    update = {"StackName": "datahub-remote-executor", "TemplateBody": TEMPLATE.read_text(),
              "Capabilities": ["CAPABILITY_NAMED_IAM"]}
    keep = [{"ParameterKey": name, "UsePreviousValue": True} for name in SEED_PARAMETERS]
    cloudformation.update_stack(**update, Parameters=[*keep, {"ParameterKey": "EnvironmentVariables",
                                                              "ParameterValue": "FOO=1"}])
    assert stack("datahub-remote-executor", "UPDATE_COMPLETE")["Parameters"]["EnvironmentVariables"] == "FOO=1"
    cloudformation.update_stack(**update, Parameters=[*keep, {"ParameterKey": "ImageTag", "ParameterValue": "0.2.0"}])
    assert stack("datahub-remote-executor", "UPDATE_COMPLETE")["Parameters"]["EnvironmentVariables"] == ""
    assert "update-stack resets" in OPERATIONS.read_text()
