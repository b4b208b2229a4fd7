"""The ECS CloudFormation template: generated from one definition, linted by cfn-lint, its IAM
exactly as narrow as the issue asks, its parameter patterns run through java.util.regex (the
engine CloudFormation's AllowedPattern uses), and created for real in moto's CloudFormation (with
two secrets and two environment variables) to check that the list expansion yields what it should.

moto differences, handled where they show: it leaves AWS::NoValue in lists as None (real
CloudFormation drops the item), has no CloudFormation support for AWS::SecretsManager::Secret (so
the token's ValueFrom is checked on the template instead of on the created task definition),
attaches no ManagedPolicyArns and does not enforce AllowedPattern (both checked on the template).
"""
from __future__ import annotations

import ast
import base64
import json
import re
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
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:dhx-a1b2c3d4-remote"
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
    broken.write_text(TEMPLATE.read_text().replace("Ref: PoolQueueArn", "Ref: PoolQueueArnTypo"))
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
    assert "Default" not in parameters["ImageRepository"], "no default that would pull from nowhere"
    assert parameters["AssignPublicIp"]["AllowedValues"] == ["ENABLED", "DISABLED"]
    for name in ("DataHubBaseUrl", "ExecutorPoolId", "PoolQueueArn", "SecretNames", "EnvironmentVariables",
                 "ImageRepository"):
        assert parameters[name].get("AllowedPattern"), name


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
    ("PoolQueueArn", QUEUE_ARN, True),
    ("PoolQueueArn", "arn:aws-cn:sqs:cn-north-1:210987654321:pool.fifo", True),
    ("PoolQueueArn", "arn:aws:sqs:us-east-1:123456789012:*", False),
    ("PoolQueueArn", "https://sqs.us-east-1.amazonaws.com/123456789012/q", False),
    ("ImageRepository", "123456789012.dkr.ecr.us-east-1.amazonaws.com/datahub-remote-executor", True),
    ("ImageRepository", "registry.internal:5000/data/datahub-remote-executor", True),
    ("ImageRepository", "datahub-remote-executor:v1.2", False),
    ("ImageRepository", "", False),
    ("SecretNames", "", True),
    ("SecretNames", ",".join(f"{k}={v}" for k, v in SECRET_ARNS.items()), True),
    ("SecretNames", ",".join(f"S{i}={SECRET_ARNS['API_KEY']}" for i in range(10)), True),
    ("SecretNames", ",".join(f"S{i}={SECRET_ARNS['API_KEY']}" for i in range(11)), False),
    ("SecretNames", "DB=arn:aws:secretsmanager:us-east-1:123456789012:secret:*", False),
    ("SecretNames", "DB=arn:aws:secretsmanager:us-east-1:123456789012:secret:db-pass-??????", False),
    ("SecretNames", "DB=arn:aws:secretsmanager:us-east-1:123456789012:secret:db-pass", False),
    ("SecretNames", f"DB={SECRET_ARNS['DB_PASSWORD']}:password::", False),
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
    for _, value, allowed in (case for case in PATTERN_CASES if case[0] == "DataHubBaseUrl" and case[2]):
        parse_url(value)  # raises if the executor would refuse what the stack accepted
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
    assert sqs == {"Effect": "Allow", "Action": SQS_ACTIONS, "Resource": {"Ref": "PoolQueueArn"}}
    condition, statement, otherwise = secrets["Fn::If"]
    assert condition == "HasSecret1" and otherwise == {"Ref": "AWS::NoValue"}, "no secrets named, no statement"
    assert statement["Effect"] == "Allow" and statement["Action"] == "secretsmanager:GetSecretValue"
    assert names_used(statement["Resource"]) == {"SecretNames", "AWS::NoValue"}
    assert not [s for s in strings(role) if "*" in s or "?" in s], "no wildcard in the task role"


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
    assert executor["HealthCheck"]["Command"] == ["CMD", "datahub-executor", "healthcheck"]
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


def create_stack(secret_names: str, environment: str) -> dict[str, str]:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    parameters = {"VPCID": vpc, "SubnetID": subnet, "DataHubBaseUrl": "https://acme.acryl.io/gms",
                  "DataHubAccessToken": TOKEN, "ExecutorPoolId": "remote", "PoolQueueArn": QUEUE_ARN,
                  "ImageRepository": "123456789012.dkr.ecr.us-east-1.amazonaws.com/datahub-remote-executor",
                  "SecretNames": secret_names, "EnvironmentVariables": environment}
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    cloudformation.create_stack(
        StackName="dhx", TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()])
    (stack,) = cloudformation.describe_stacks(StackName="dhx")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    return {output["OutputKey"]: output["OutputValue"] for output in stack["Outputs"]}


def created_task_definition() -> dict:
    ecs = boto3.client("ecs", region_name="us-east-1")
    (arn,) = ecs.list_task_definitions()["taskDefinitionArns"]
    return ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]


def role_policies() -> dict[str, dict]:
    iam = boto3.client("iam", region_name="us-east-1")
    policies = {}
    for role in iam.list_roles()["Roles"]:
        for name in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
            document = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]
            # moto hands the stored document back as the repr of a dict (None for AWS::NoValue)
            if isinstance(document, str):
                document = ast.literal_eval(document)
            policies[role["RoleName"].split("-")[1]] = document
    return policies


def present(items: list) -> list:
    return [item for item in items if item is not None]  # moto keeps AWS::NoValue as None


def test_a_created_stack_carries_two_secrets_and_two_variables_exactly(aws):
    outputs = create_stack(",".join(f"{k}={v}" for k, v in SECRET_ARNS.items()),
                           "DATAHUB_EXECUTOR_LOG_LEVEL=DEBUG,FOO=")
    assert set(outputs) == {"ClusterName", "ServiceName", "TaskRoleArn", "LogGroupName"}
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
    assert sqs["Action"] == SQS_ACTIONS and sqs["Resource"] == QUEUE_ARN
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
    assert only["Action"] == SQS_ACTIONS and only["Resource"] == QUEUE_ARN
