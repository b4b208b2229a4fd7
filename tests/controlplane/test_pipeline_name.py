"""A run's recipe names its pipeline: the source's urn where the recipe gives no pipeline_name, as
DataHub's CreateIngestionExecutionRequestResolver and scheduler give it (IngestionUtils.
injectPipelineName). Stateful ingestion keeps its checkpoints under that name, and acryl-datahub
refuses a recipe that turns it on without one. Read back as DataHub's client reads a run."""
from __future__ import annotations

import json

import datahub.metadata.schema_classes as model
import pytest
import yaml

from controlplane.sources import with_pipeline_name

URN = "urn:li:dataHubIngestionSource:orders"


@pytest.mark.parametrize("recipe, named", [
    ('{"source": {"type": "file", "config": {"path": "/x"}}}', URN),  # JSON, as the UI saves recipes
    ("source:\n  type: file  # the orders\n  config:\n    path: /x\n", URN),  # YAML: a line added, comments kept
    ("{source: {type: file, config: {path: /x}}}", URN),  # flow-style YAML: written as JSON
    ('{"source": {"type": "file"}, "pipeline_name": ""}', URN),  # empty: DataHub names it too
    ('{"source": {"type": "file"}, "pipeline_name": "orders-nightly"}', "orders-nightly"),
    ("source:\n  type: file\npipeline_name: orders-nightly\n", "orders-nightly"),
])
def test_a_recipe_without_a_pipeline_name_gets_the_sources_urn(recipe, named):
    result = with_pipeline_name(recipe, URN)
    parsed = yaml.safe_load(result)
    assert parsed["pipeline_name"] == named
    assert {k: v for k, v in parsed.items() if k != "pipeline_name"} == {
        k: v for k, v in yaml.safe_load(recipe).items() if k != "pipeline_name"}
    if named != URN:
        assert result == recipe, "a recipe that names its pipeline is left as written"
    if recipe.lstrip().startswith("source:"):
        assert "# the orders" in result or "#" not in recipe


def test_a_run_of_a_source_carries_the_sources_urn_as_its_pipeline_name(cp, graph):
    cp.create_pool("p", default=True)
    source = cp.create_source("orders", json.dumps({"source": {"type": "file", "config": {"path": "/x"}}}))
    run = cp.run_source(source["id"])
    run_input = graph.get_aspect(f"urn:li:dataHubExecutionRequest:{run['id']}", model.ExecutionRequestInputClass)
    assert json.loads(run_input.args["recipe"])["pipeline_name"] == source["urn"]
    stored = graph.get_aspect(source["urn"], model.DataHubIngestionSourceInfoClass)
    assert "pipeline_name" not in json.loads(stored.config.recipe), "the source itself is left as saved"
