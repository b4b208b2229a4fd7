"""Writes datahub-executor.ecs.template.yaml, the ECS (Fargate) stack of one remote executor.

    python deploy/cloudformation/generate.py > deploy/cloudformation/datahub-executor.ecs.template.yaml

CloudFormation has no loops over list items, and the seed asks for "up to 10" secrets and
environment variables given as one comma-separated parameter each. So the ten slots are
written out here, once, rather than by hand ten times: each slot is a condition ("is entry N
present?") and an Fn::If that yields the entry or AWS::NoValue. (AWS::LanguageExtensions'
Fn::ForEach cannot build list items, which is what container Secrets and Environment are.)
The test suite regenerates the file and fails if the committed one differs, and runs cfn-lint
on it.

Parsing a list "A=arn1,B=arn2": the parameter is padded with ten "=" entries and split on ",",
so slot N always exists; an entry equal to "=" is padding. Each entry is split on "=" into name
and value. AllowedPattern on the parameters keeps names to letters, digits and '_' and forbids
',' and '=' inside values, so the split is exact.
"""
from __future__ import annotations

import sys

import yaml

SLOTS = 10
DRAIN_TIMEOUT_S = 110  # below the container's StopTimeout, so the drain ends before ECS kills it
STOP_TIMEOUT_S = 120  # Fargate's maximum
SECRET_ENTRY = r"[A-Za-z_][A-Za-z0-9_]*=arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[^,=]+"
ENV_ENTRY = r"[A-Za-z_][A-Za-z0-9_]*=[^,=]*"
TASK_SIZES = {  # Fargate's valid cpu/memory pairs, named for people
    "1vCPU-4GB": (1024, 4096), "2vCPU-8GB": (2048, 8192), "4vCPU-16GB": (4096, 16384),
    "8vCPU-32GB": (8192, 32768), "16vCPU-64GB": (16384, 65536),
}


def ref(name: str) -> dict:
    return {"Ref": name}


def entry(parameter: str, slot: int) -> dict:
    padded = {"Fn::Sub": "${%s}%s" % (parameter, ",=" * SLOTS)}
    return {"Fn::Select": [slot, {"Fn::Split": [",", padded]}]}


def part(parameter: str, slot: int, index: int) -> dict:
    return {"Fn::Select": [index, {"Fn::Split": ["=", entry(parameter, slot)]}]}


def condition_name(kind: str, slot: int) -> str:
    return f"Has{kind}{slot + 1}"


def conditions() -> dict:
    result = {}
    for kind, parameter in (("Secret", "SecretNames"), ("EnvironmentVariable", "EnvironmentVariables")):
        result[condition_name(kind, 0)] = {"Fn::Not": [{"Fn::Equals": [ref(parameter), ""]}]}
        for slot in range(1, SLOTS):
            result[condition_name(kind, slot)] = {"Fn::Not": [{"Fn::Equals": [entry(parameter, slot), "="]}]}
    return result


def slots(kind: str, make) -> list:
    return [{"Fn::If": [condition_name(kind, slot), make(slot), ref("AWS::NoValue")]} for slot in range(SLOTS)]


def secret_arns(*, first_is_present: bool = False) -> list:
    """The named secrets' ARNs; inside a statement that exists only when some are named, the
    first slot is known to be present (cfn-lint rightly flags an If that cannot be false)."""
    arns = slots("Secret", lambda slot: part("SecretNames", slot, 1))
    if first_is_present:
        arns[0] = part("SecretNames", 0, 1)
    return arns


def parameters() -> dict:
    return {
        "VPCID": {"Type": "AWS::EC2::VPC::Id", "Description": "The VPC the executor runs in."},
        "SubnetID": {"Type": "AWS::EC2::Subnet::Id",
                     "Description": "A subnet with outbound access to DataHub, SQS and your data sources (a NAT "
                                    "gateway, or AssignPublicIp=ENABLED in a public subnet)."},
        "DataHubBaseUrl": {"Type": "String", "AllowedPattern": r"^https?://[^/]+(/.*)?/gms/?$",
                           "ConstraintDescription": "must be an http(s) URL ending in /gms",
                           "Description": "DataHub's URL including /gms, e.g. https://<company>.acryl.io/gms"},
        "DataHubAccessToken": {"Type": "String", "NoEcho": True, "MinLength": 1,
                               "Description": "A Remote Executor access token; kept in a Secrets Manager secret "
                                              "this stack creates, never in the task definition."},
        "ExecutorPoolId": {"Type": "String", "AllowedPattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
                           "Description": "The executor pool this executor serves."},
        "PoolQueueArn": {"Type": "String",
                         "AllowedPattern": r"^arn:aws[a-z-]*:sqs:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,80}(\.fifo)?$",
                         "ConstraintDescription": "must be an SQS queue ARN",
                         "Description": "ARN of the pool's queue (shown on the pool in the control plane); the "
                                        "task may receive, delete and change visibility there, nothing more."},
        "ImageRepository": {"Type": "String", "Default": "datahub-remote-executor",
                            "Description": "Registry and repository of the executor image built from this "
                                           "project's Dockerfile, e.g. <account>.dkr.ecr.<region>.amazonaws.com/"
                                           "datahub-remote-executor"},
        "ImageTag": {"Type": "String", "Default": "latest", "Description": "Executor image version."},
        "SecretNames": {"Type": "String", "Default": "",
                        "AllowedPattern": f"^$|^{SECRET_ENTRY}(,{SECRET_ENTRY}){{0,{SLOTS - 1}}}$",
                        "ConstraintDescription": f"up to {SLOTS} NAME=SECRET_ARN entries, comma-separated",
                        "Description": f"Up to {SLOTS} NAME=SECRET_ARN, comma-separated: each Secrets Manager "
                                       "secret reaches the executor as environment variable NAME, for ${NAME} "
                                       "in recipes."},
        "EnvironmentVariables": {"Type": "String", "Default": "",
                                 "AllowedPattern": f"^$|^{ENV_ENTRY}(,{ENV_ENTRY}){{0,{SLOTS - 1}}}$",
                                 "ConstraintDescription": f"up to {SLOTS} NAME=VALUE entries, comma-separated, "
                                                          "values without ',' or '='",
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


def assume_ecs_tasks() -> dict:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def resources() -> dict:
    read_named_secrets = {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                          "Resource": secret_arns(first_is_present=True)}
    environment = [
        {"Name": "DATAHUB_GMS_URL", "Value": ref("DataHubBaseUrl")},
        {"Name": "DATAHUB_EXECUTOR_POOL_ID", "Value": ref("ExecutorPoolId")},
        {"Name": "DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS", "Value": ref("IngestionMaxWorkers")},
        {"Name": "DATAHUB_EXECUTOR_MONITORS_MAX_WORKERS", "Value": ref("MonitorsMaxWorkers")},
        {"Name": "DATAHUB_EXECUTOR_DRAIN_TIMEOUT", "Value": str(DRAIN_TIMEOUT_S)},
        {"Name": "DATAHUB_EXECUTOR_HEALTH_ADDRESS", "Value": "0.0.0.0:9087"},
        {"Name": "DATAHUB_EXECUTOR_LOG_JSON", "Value": "true"},
        *slots("EnvironmentVariable", lambda slot: {"Name": part("EnvironmentVariables", slot, 0),
                                                    "Value": part("EnvironmentVariables", slot, 1)}),
    ]
    secrets = [
        {"Name": "DATAHUB_GMS_TOKEN", "ValueFrom": ref("AccessTokenSecret")},
        *slots("Secret", lambda slot: {"Name": part("SecretNames", slot, 0), "ValueFrom": part("SecretNames", slot, 1)}),
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
                     "Resource": ref("PoolQueueArn")},
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
                "Image": {"Fn::Sub": "${ImageRepository}:${ImageTag}"},
                "Essential": True,
                "Environment": environment,
                "Secrets": secrets,
                "StopTimeout": STOP_TIMEOUT_S,
                "HealthCheck": {"Command": ["CMD", "datahub-executor", "healthcheck"], "Interval": 30,
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
            # The new task joins the pool before the old one drains.
            "DeploymentConfiguration": {"MinimumHealthyPercent": 100, "MaximumPercent": 200},
            "NetworkConfiguration": {"AwsvpcConfiguration": {
                "AssignPublicIp": ref("AssignPublicIp"), "Subnets": [ref("SubnetID")],
                "SecurityGroups": [ref("SecurityGroup")]}}}},
    }


def template() -> dict:
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "DataHub remote executor on ECS Fargate: one task taking work from its pool's SQS queue.",
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
        },
    }


HEADER = """\
# DataHub remote executor on ECS Fargate. GENERATED by deploy/cloudformation/generate.py; edit that.
# Fargate gives the container no writable cgroup filesystem: the executor's sandbox runs in mode
# none there (task memory watched and enforced by the executor; pids and cpu not capped per task).
# DATAHUB_EXECUTOR_DRAIN_TIMEOUT=%d stays below the container's StopTimeout=%d (Fargate's maximum),
# so a deployment's SIGTERM lets tasks finish or be reported ABORTED before ECS kills the master.
""" % (DRAIN_TIMEOUT_S, STOP_TIMEOUT_S)


def render() -> str:
    return HEADER + yaml.safe_dump(template(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
