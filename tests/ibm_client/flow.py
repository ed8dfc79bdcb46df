"""What a Watson ML user's script does with the IBM client, run in the client's own virtualenv
against a tfbatch API: store a SavedModel, deploy it online, score, list, delete. Prints one
line `RESULT <json>` with what each step gave back; any failure raises and exits non-zero.

Usage: python flow.py URL USERNAME PASSWORD INSTANCE_ID ARCHIVE.tar.gz
"""
import json
import sys

from watson_machine_learning_client import WatsonMachineLearningAPIClient

url, username, password, instance_id, archive = sys.argv[1:6]
client = WatsonMachineLearningAPIClient({"url": url, "username": username, "password": password,
                                         "instance_id": instance_id})
names = client.repository.ModelMetaNames
stored = client.repository.store_model(model=archive, meta_props={
    names.NAME: "ibm-client-model", names.FRAMEWORK_NAME: "tensorflow", names.FRAMEWORK_VERSION: "2.21"})
model_uid = client.repository.get_model_uid(stored)
model = client.repository.get_model_details(model_uid)
client.repository.list_models()
deployment = client.deployments.create(model_uid, name="ibm-client-online")
deployment_uid = client.deployments.get_uid(deployment)
scoring_url = client.deployments.get_scoring_url(deployment)
status = client.deployments.get_status(deployment_uid)
scored = client.deployments.score(scoring_url, {"fields": ["a", "b"], "values": [[[1.0, 2.0, 3.0], 4]]})
client.deployments.list()
listed = client.deployments.get_details()
deleted = client.deployments.delete(deployment_uid)
try:
    client.deployments.get_details(deployment_uid)
    after_delete = "still there"
except Exception as error:  # the client raises ApiRequestFailure on the 404
    after_delete = f"{type(error).__name__}: {error}"
print("RESULT " + json.dumps({
    "model_uid": model_uid, "model_type": model["entity"]["model_type"], "deployment_uid": deployment_uid,
    "scoring_url": scoring_url, "status": status, "scored": scored,
    "listed": [item["metadata"]["guid"] for item in listed["resources"]], "deleted": deleted,
    "after_delete": after_delete}), flush=True)
