"""Writes datahub-executor.ecs.template.yaml, the ECS (Fargate) stack of one remote executor.

    python deploy/cloudformation/generate.py > deploy/cloudformation/datahub-executor.ecs.template.yaml

The seed asks for "up to 10" secrets and environment variables, each list one comma-separated
parameter. Two ways to expand them were weighed:

- AWS::LanguageExtensions (Fn::ForEach, Fn::Length), which the seed's CAPABILITY_AUTO_EXPAND
  hints at. Fn::ForEach only ever yields map keys (its fragment is {OutputKey: OutputValue});
  a container's Environment and Secrets are lists of {Name, Value} items, which it cannot build,
  and the loop identifier could not be split into NAME and VALUE anyway. Nor does moto apply the
  transform, so the tests could not create the expanded stack.
- Ten slots, each a condition ("is entry N present?") and an Fn::If that yields the entry or
  AWS::NoValue. Plain CloudFormation; cfn-lint checks it and moto creates it. This one.

The seed's create-stack names five parameters (REQUIRED_PARAMETERS); every other one defaults.
PoolQueueArn and ImageRepository default to empty, and are then derived: the pool's two queues from
the pool id, in the stack's account and region (QUEUE_SUFFIXES), and the image from this account's
ECR (DEFAULT_IMAGE).

The ten slots are written here once rather than by hand ten times. The test suite regenerates
the file and fails if the committed one differs, runs cfn-lint on it and creates it in moto.

Parsing a list "A=arn1,B=arn2": the parameter is a String (not a CommaDelimitedList), so one
AllowedPattern checks the whole list, its count included, before anything is created. It is
padded with ten "=" entries and split on ",", so slot N always exists; an entry equal to "=" is
padding. Each entry is split on "=" into name and value. The patterns keep names to letters,
digits and '_', refuse the names this template sets itself (ECS refuses a secret and a variable
of one name only when it registers the task definition, well into the stack's creation), forbid
',' and '=' inside values so the split is exact, and accept only a full secret ARN, so that no
IAM wildcard ('*', '?') and no partial ARN reaches a policy.

A secret's value may be ECS's whole valueFrom, ARN:JSON_KEY:VERSION_STAGE:VERSION_ID (ECS then
injects that key's value), in the grammar the executor's DATAHUB_EXECUTOR_AWS_SECRETS uses
(executor/runtime/secrets.py). The container gets it whole; the roles get GetSecretValue on the
secret's own ARN, cut out of it by Fn::Split on ":secret:" and ":" (secret_arn), since IAM knows
nothing of keys. Those expressions, like the existing ones, are only valid for a slot that is
present: CloudFormation resolves the branch of Fn::If its condition picks, and no other (the
AWS::LanguageExtensions transform resolves both, one more reason not to use it).

Each slot's parts are written on one line: the template must stay under the 51,200 bytes that
create-stack accepts as --template-body, which the documented commands use.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

# A script of this checkout uses this checkout's vocabulary, whether or not the project is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from executor.runtime.secrets import SECRET_VALUE_FROM_PATTERN  # noqa: E402
from vocabulary import ids  # noqa: E402

SLOTS = 10
DRAIN_TIMEOUT_S = 110  # below the container's StopTimeout, so the drain ends before ECS kills it
STOP_TIMEOUT_S = 120  # Fargate's maximum
# As in the image. The security group admits nothing, so outside the task nobody reaches it;
# the container health check (`datahub-executor healthcheck --live`) asks 127.0.0.1:9087/health/live:
# ECS replaces an unhealthy task, killing what it runs, so the check fails only on what a restart
# mends (loops stalled or gone), not on a refused token (/health's 503), which it does not.
HEALTH_ADDRESS = "0.0.0.0:9087"
# What the template itself sets in the container; user entries may not repeat them.
FIXED_ENVIRONMENT = {
    "DATAHUB_EXECUTOR_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT_S),
    "DATAHUB_EXECUTOR_HEALTH_ADDRESS": HEALTH_ADDRESS,
    "DATAHUB_EXECUTOR_LOG_JSON": "true",
}
PARAMETER_ENVIRONMENT = {
    "DATAHUB_GMS_URL": "DataHubBaseUrl",
    "DATAHUB_EXECUTOR_POOL_ID": "ExecutorPoolId",
    "DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS": "IngestionMaxWorkers",
    "DATAHUB_EXECUTOR_MONITORS_MAX_WORKERS": "MonitorsMaxWorkers",
}
TOKEN_VARIABLE = "DATAHUB_GMS_TOKEN"
# The GMS URLs the executor takes (executor/settings.py, _gms_url), as nearly as a regular
# expression can say it, so that the stack refuses at create-stack what the task would refuse at
# start, in a crash loop: http(s) in any case, a host (a name, or an IPv6 address in balanced
# brackets), a port if any from 1 to 65535, and a path ending in /gms, then at most slashes or a
# query or fragment (which urlparse sets apart from the path). The Helm chart's executor.gmsUrl
# has the same pattern; tests/deploy checks both against the executor.
PORT = r"[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]"
GMS_URL = (r"^(?i:https?)://([^/?#\[\]]*@)?([^/?#@:\[\]]+|\[[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\])"
           r"(:(0*(" + PORT + r"))?)?(/[^?#]*)?/gms(/*|[?#].*)$")
RESERVED = (*PARAMETER_ENVIRONMENT, *FIXED_ENVIRONMENT, TOKEN_VARIABLE)
NAME = r"(?!(?:" + "|".join(RESERVED) + r")=)[A-Za-z_][A-Za-z0-9_]*"
# What ECS takes as a secret's valueFrom, as the executor's DATAHUB_EXECUTOR_AWS_SECRETS does: a full
# ARN (the name, '-' and the six characters Secrets Manager appends), optionally followed by
# :JSON_KEY:VERSION_STAGE:VERSION_ID.
SECRET_ENTRY = f"{NAME}={SECRET_VALUE_FROM_PATTERN}"
ENV_ENTRY = f"{NAME}=[^,=]*"
# The control plane names a pool's queues dhx-<installation>-<pool> (ingestion) and
# dhx-<installation>-<pool>-monitors, <installation> being 8 hex characters. IAM's '?' matches
# exactly one character, so eight of them cover this pool's two queues (of any installation in the
# account) and not its dead-letter queues: another pool id gives a name of another length or end,
# and no '*' can stretch it (a pool id holds no '*' or '?'). Pool ids may not end in -monitors or
# -dlq (vocabulary/ids.py), so no pool's queue has the name of another pool's monitors or
# dead-letter queue.
QUEUE_SUFFIXES = ("", "-monitors")
DERIVED_QUEUE = "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:dhx-????????-${ExecutorPoolId}"
# SQS names are at most 80 characters and the monitors queue appends 9 to the given one.
QUEUE_ARN = r"arn:aws[a-z-]*:sqs:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,71}"
# Without ImageRepository: the repository of that name in this account's ECR, in the stack's region.
IMAGE_NAME = "datahub-remote-executor"
DEFAULT_IMAGE = "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/" + IMAGE_NAME
TASK_SIZES = {  # valid Fargate cpu/memory pairs, named for people; one choice cannot pick an invalid pair
    "1vCPU-4GB": (1024, 4096), "2vCPU-8GB": (2048, 8192), "2vCPU-16GB": (2048, 16384),
    "4vCPU-16GB": (4096, 16384), "4vCPU-30GB": (4096, 30720), "8vCPU-32GB": (8192, 32768),
    "8vCPU-60GB": (8192, 61440), "16vCPU-64GB": (16384, 65536), "16vCPU-120GB": (16384, 122880),
}


# What the seed's create-stack passes; every other parameter has a default or is derived.
REQUIRED_PARAMETERS = ("ExecutorPoolId", "VPCID", "SubnetID", "DataHubBaseUrl", "DataHubAccessToken")


def ref(name: str) -> dict:
    return {"Ref": name}


class OneLine(dict):
    """An expression written on one line (YAML flow style). Each slot's parts are, so that the
    template stays readable and under the 51,200 bytes create-stack takes as --template-body."""


class TemplateDumper(yaml.SafeDumper):
    pass


TemplateDumper.add_representer(
    OneLine, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True))


def entry(parameter: str, slot: int) -> dict:
    padded = {"Fn::Sub": "${" + parameter + "}" + ",=" * SLOTS}
    return OneLine({"Fn::Select": [slot, {"Fn::Split": [",", padded]}]})


def part(parameter: str, slot: int, index: int) -> dict:
    return OneLine({"Fn::Select": [index, {"Fn::Split": ["=", entry(parameter, slot)]}]})


def condition_name(kind: str, slot: int) -> str:
    return f"Has{kind}{slot + 1}"


def conditions() -> dict:
    result = {"DerivePoolQueues": {"Fn::Equals": [ref("PoolQueueArn"), ""]},
              "DefaultImageRepository": {"Fn::Equals": [ref("ImageRepository"), ""]}}
    for kind, parameter in (("Secret", "SecretNames"), ("EnvironmentVariable", "EnvironmentVariables")):
        result[condition_name(kind, 0)] = {"Fn::Not": [{"Fn::Equals": [ref(parameter), ""]}]}
        for slot in range(1, SLOTS):
            result[condition_name(kind, slot)] = {"Fn::Not": [{"Fn::Equals": [entry(parameter, slot), "="]}]}
    return result


def slots(kind: str, make) -> list:
    return [{"Fn::If": [condition_name(kind, slot), make(slot), ref("AWS::NoValue")]} for slot in range(SLOTS)]


def secret_arn(slot: int) -> dict:
    """The secret's own ARN, what IAM grants GetSecretValue on, from entry SLOT's valueFrom, which
    may end in :JSON_KEY:VERSION_STAGE:VERSION_ID. A secret's name holds no ':', so the ARN is
    what precedes ':secret:', ':secret:', and the name up to the next ':'."""
    def half(index: int) -> dict:  # built anew for each use: a shared node would be dumped as a YAML alias
        return {"Fn::Select": [index, {"Fn::Split": [":secret:", part("SecretNames", slot, 1)]}]}

    return {"Fn::Join": [":secret:", [half(0), {"Fn::Select": [0, {"Fn::Split": [":", half(1)]}]}]]}


def secret_arns(*, first_is_present: bool = False) -> list:
    """The named secrets' own ARNs; inside a statement that exists only when some are named, the
    first slot is known to be present (cfn-lint rightly flags an If that cannot be false)."""
    arns = slots("Secret", secret_arn)
    if first_is_present:
        arns[0] = secret_arn(0)
    return arns


def parameters() -> dict:
    return {
        "VPCID": {"Type": "AWS::EC2::VPC::Id", "Description": "The VPC the executor runs in."},
        "SubnetID": {"Type": "AWS::EC2::Subnet::Id",
                     "Description": "A subnet with outbound access to DataHub, SQS and your data sources (a NAT "
                                    "gateway, or AssignPublicIp=ENABLED in a public subnet)."},
        "DataHubBaseUrl": {"Type": "String", "AllowedPattern": GMS_URL,
                           "ConstraintDescription": "must be an http(s) URL with a host, a port (if any) from 1 "
                                                    "to 65535, and a path ending in /gms",
                           "Description": "DataHub's URL including /gms, e.g. https://<company>.acryl.io/gms "
                                          "(the update guide's DatahubGmsURL)."},
        "DataHubAccessToken": {"Type": "String", "NoEcho": True, "MinLength": 1,
                               "Description": "A Remote Executor access token; kept in a Secrets Manager secret "
                                              "this stack creates, never in the task definition."},
        "ExecutorPoolId": {"Type": "String", "AllowedPattern": ids.POOL_ID_PATTERN,
                           "ConstraintDescription": ids.POOL_ID_RULE,
                           "Description": "The executor pool this executor serves (its id in DataHub)."},
        "PoolQueueArn": {"Type": "String", "Default": "", "AllowedPattern": f"^$|^{QUEUE_ARN}$",
                         "ConstraintDescription": "must be empty or the ARN of the pool's SQS queue (not its "
                                                  "-monitors or -dlq queue)",
                         "Description": "Leave empty when the pool's queues are in this account and region: the "
                                        "task may then use dhx-????????-<ExecutorPoolId> and its -monitors queue. "
                                        "Otherwise the ARN of the pool's queue (shown on the pool in the control "
                                        "plane); the task may use it and <that ARN>-monitors. Either way it may "
                                        "receive, delete and change visibility, nothing more."},
        # An empty default rather than none: the seed's create-stack names five parameters. A
        # repository that does not exist fails the stack all the same: the service's circuit
        # breaker fails the deployment after three tasks that could not start
        # (CannotPullContainerError, in the stopped tasks' reason).
        "ImageRepository": {"Type": "String", "Default": "",
                            "AllowedPattern": r"^$|^[a-z0-9][a-z0-9.-]*(:[0-9]+)?(/[a-z0-9._-]+)*$",
                            "ConstraintDescription": "must be empty or an image repository without a tag (that is "
                                                     "ImageTag), e.g. <account>.dkr.ecr.<region>.amazonaws.com/"
                                                     + IMAGE_NAME,
                            "Description": "Registry and repository of the executor image built from this "
                                           "project's Dockerfile. Empty: " + IMAGE_NAME + " in this account's "
                                           "ECR, in the stack's region."},
        "ImageTag": {"Type": "String", "Default": "latest", "Description": "Executor image version."},
        "SecretNames": {"Type": "String", "Default": "",
                        "AllowedPattern": f"^$|^{SECRET_ENTRY}(,{SECRET_ENTRY}){{0,{SLOTS - 1}}}$",
                        "ConstraintDescription": f"up to {SLOTS} NAME=SECRET_ARN entries, comma-separated; "
                                                 "full secret ARNs (ending in the 6-character suffix), optionally "
                                                 "followed by :JSON_KEY:VERSION_STAGE:VERSION_ID with all three "
                                                 "colons; names other than " + ", ".join(RESERVED),
                        "Description": f"Up to {SLOTS} NAME=SECRET_ARN, comma-separated: each Secrets Manager "
                                       "secret reaches the executor as environment variable NAME, for ${NAME} "
                                       "in recipes. SECRET_ARN:JSON_KEY:: gives that key's value (ECS's "
                                       "valueFrom form, e.g. DB_PASSWORD=<arn>:password::)."},
        "EnvironmentVariables": {"Type": "String", "Default": "",
                                 "AllowedPattern": f"^$|^{ENV_ENTRY}(,{ENV_ENTRY}){{0,{SLOTS - 1}}}$",
                                 "ConstraintDescription": f"up to {SLOTS} NAME=VALUE entries, comma-separated, "
                                                          "values without ',' or '=', names other than "
                                                          + ", ".join(RESERVED),
                                 "Description": f"Up to {SLOTS} NAME=VALUE, comma-separated: more executor settings "
                                                "(docs/settings.md), e.g. DATAHUB_EXECUTOR_LOG_LEVEL=DEBUG."},
        "IngestionMaxWorkers": {"Type": "Number", "Default": 4, "MinValue": 1,
                                "Description": "Concurrent ingestion tasks at default weight."},
        "MonitorsMaxWorkers": {"Type": "Number", "Default": 10, "MinValue": 1,
                               "Description": "Concurrent monitor tasks at default weight."},
        "TaskSize": {"Type": "String", "Default": "4vCPU-16GB", "AllowedValues": list(TASK_SIZES),
                     "Description": "CPU and memory of the executor task (all its ingestion tasks share them)."},
        "AssignPublicIp": {"Type": "String", "Default": "DISABLED", "AllowedValues": ["ENABLED", "DISABLED"],
                           "Description": "ENABLED only in a public subnet without a NAT gateway."},
        "LogRetentionDays": {"Type": "Number", "Default": 30,
                             "AllowedValues": [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827,
                                               3653],
                             "Description": "How long CloudWatch keeps the executor's log."},
    }


def pool_queue_arns() -> dict:
    """This pool's ingestion and monitors queues: derived from the pool id, or from PoolQueueArn."""
    return {"Fn::If": ["DerivePoolQueues",
                       [{"Fn::Sub": DERIVED_QUEUE + suffix} for suffix in QUEUE_SUFFIXES],
                       [{"Fn::Sub": "${PoolQueueArn}" + suffix} for suffix in QUEUE_SUFFIXES]]}


def image() -> dict:
    return {"Fn::If": ["DefaultImageRepository", {"Fn::Sub": DEFAULT_IMAGE + ":${ImageTag}"},
                       {"Fn::Sub": "${ImageRepository}:${ImageTag}"}]}


def assume_ecs_tasks() -> dict:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def resources() -> dict:
    read_named_secrets = {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                          "Resource": secret_arns(first_is_present=True)}
    environment = [
        *({"Name": name, "Value": ref(parameter)} for name, parameter in PARAMETER_ENVIRONMENT.items()),
        *({"Name": name, "Value": value} for name, value in FIXED_ENVIRONMENT.items()),
        *slots("EnvironmentVariable", lambda slot: {"Name": part("EnvironmentVariables", slot, 0),
                                                    "Value": part("EnvironmentVariables", slot, 1)}),
    ]
    secrets = [
        {"Name": TOKEN_VARIABLE, "ValueFrom": ref("AccessTokenSecret")},
        *slots("Secret", lambda slot: {"Name": part("SecretNames", slot, 0),
                                       "ValueFrom": part("SecretNames", slot, 1)}),
    ]
    return {
        "Cluster": {"Type": "AWS::ECS::Cluster",
                    "Properties": {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]}},
        "LogGroup": {"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete",
                     "Properties": {"LogGroupName": {"Fn::Sub": "/datahub-executor/${AWS::StackName}"},
                                    "RetentionInDays": ref("LogRetentionDays")}},
        "AccessTokenSecret": {"Type": "AWS::SecretsManager::Secret", "DeletionPolicy": "Delete",
                              "UpdateReplacePolicy": "Delete",
                              "Properties": {"Description": "DataHub Remote Executor access token",
                                             "SecretString": ref("DataHubAccessToken")}},
        "ExecutionRole": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": assume_ecs_tasks(),
            "ManagedPolicyArns": [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/"
                                              "AmazonECSTaskExecutionRolePolicy"}],
            "Policies": [{"PolicyName": "inject-container-secrets", "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                               "Resource": [ref("AccessTokenSecret"), *secret_arns()]}]}}]}},
        "TaskRole": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": assume_ecs_tasks(),
            "Policies": [{"PolicyName": "executor", "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow",
                     "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"],
                     "Resource": pool_queue_arns()},
                    {"Fn::If": [condition_name("Secret", 0), read_named_secrets, ref("AWS::NoValue")]},
                ]}}]}},
        "SecurityGroup": {"Type": "AWS::EC2::SecurityGroup", "Properties": {
            "GroupDescription": "DataHub executor: outbound only",
            "VpcId": ref("VPCID"),
            "SecurityGroupEgress": [{"IpProtocol": "-1", "CidrIp": "0.0.0.0/0",
                                     "Description": "DataHub, SQS, package index and data sources"}]}},
        "TaskDefinition": {"Type": "AWS::ECS::TaskDefinition", "Properties": {
            "Family": {"Fn::Sub": "${AWS::StackName}-executor"},
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "Cpu": {"Fn::FindInMap": ["TaskSizes", ref("TaskSize"), "Cpu"]},
            "Memory": {"Fn::FindInMap": ["TaskSizes", ref("TaskSize"), "Memory"]},
            "ExecutionRoleArn": {"Fn::GetAtt": ["ExecutionRole", "Arn"]},
            "TaskRoleArn": {"Fn::GetAtt": ["TaskRole", "Arn"]},
            "ContainerDefinitions": [{
                "Name": "executor",
                "Image": image(),
                "Essential": True,
                "Environment": environment,
                "Secrets": secrets,
                "StopTimeout": STOP_TIMEOUT_S,
                "HealthCheck": {"Command": ["CMD", "datahub-executor", "healthcheck", "--live"], "Interval": 30,
                                "Timeout": 10, "Retries": 3, "StartPeriod": 120},
                "LogConfiguration": {"LogDriver": "awslogs", "Options": {
                    "awslogs-group": ref("LogGroup"), "awslogs-region": ref("AWS::Region"),
                    "awslogs-stream-prefix": "executor"}},
            }]}},
        "Service": {"Type": "AWS::ECS::Service", "Properties": {
            "Cluster": ref("Cluster"),
            "LaunchType": "FARGATE",
            "DesiredCount": 1,
            "TaskDefinition": ref("TaskDefinition"),
            # The new task joins the pool before the old one drains. A new task that never turns
            # healthy (bad token, unreachable DataHub) fails the deployment and rolls it back,
            # instead of ECS restarting it for hours while the stack update waits.
            "DeploymentConfiguration": {"MinimumHealthyPercent": 100, "MaximumPercent": 200,
                                        "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True}},
            "NetworkConfiguration": {"AwsvpcConfiguration": {
                "AssignPublicIp": ref("AssignPublicIp"), "Subnets": [ref("SubnetID")],
                "SecurityGroups": [ref("SecurityGroup")]}}}},
    }


def template() -> dict:
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "DataHub remote executor on ECS Fargate: one task taking work from its pool's SQS queues.",
        # The console lists the five parameters the seed's create-stack names first.
        "Metadata": {"AWS::CloudFormation::Interface": {"ParameterGroups": [
            {"Label": {"default": "Required"}, "Parameters": list(REQUIRED_PARAMETERS)},
            {"Label": {"default": "Optional"},
             "Parameters": [name for name in parameters() if name not in REQUIRED_PARAMETERS]},
        ]}},
        "Parameters": parameters(),
        "Mappings": {"TaskSizes": {name: {"Cpu": str(cpu), "Memory": str(memory)}
                                   for name, (cpu, memory) in TASK_SIZES.items()}},
        "Conditions": conditions(),
        "Resources": resources(),
        "Outputs": {
            "ClusterName": {"Value": ref("Cluster")},
            "ServiceName": {"Value": {"Fn::GetAtt": ["Service", "Name"]}},
            "TaskRoleArn": {"Value": {"Fn::GetAtt": ["TaskRole", "Arn"]}},
            "LogGroupName": {"Value": ref("LogGroup")},
            "Image": {"Description": "The image the executor task runs.", "Value": image()},
            "PoolQueueArns": {"Description": "The queues the task role may receive from, delete from and "
                                             "change visibility on.",
                              "Value": {"Fn::Join": [",", pool_queue_arns()]}},
        },
    }


HEADER = f"""\
# DataHub remote executor on ECS Fargate. GENERATED by deploy/cloudformation/generate.py; edit that.
#
# SecretNames and EnvironmentVariables ("up to 10" each) are expanded by ten conditional slots
# (Fn::Select over the Fn::Split list), not by the AWS::LanguageExtensions transform: Fn::ForEach
# yields map keys only and cannot build the container's Environment and Secrets lists. So no
# transform is used and CAPABILITY_AUTO_EXPAND is not needed (passing it does no harm).
#
# DATAHUB_EXECUTOR_SANDBOX_MODE is left at auto: Fargate gives the container no writable cgroup
# filesystem, so the executor falls back to mode none and says so at start: each task's memory
# (RSS of its process tree) is watched and the task killed over its limit; pids and cpu are not
# capped per task.
#
# DATAHUB_EXECUTOR_DRAIN_TIMEOUT={DRAIN_TIMEOUT_S} stays below the container's StopTimeout={STOP_TIMEOUT_S}
# (Fargate's maximum): on a deployment's SIGTERM, running tasks get {DRAIN_TIMEOUT_S} s to finish, the
# rest are reported ABORTED, and the master exits before ECS's SIGKILL could cut the report short.
"""


def render() -> str:
    return HEADER + yaml.dump(template(), Dumper=TemplateDumper, sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
