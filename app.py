"""tfbatch's Chalice app: routes and event handlers, wired to chalicelib. No logic lives here."""
from chalice import Chalice, Rate

from chalicelib.api import dashboard, deployments, identity, models, views
from chalicelib.api import online as online_requests
from chalicelib.api.http import V3Api
from chalicelib.core.settings import get_settings
from chalicelib.scoring import worktasks
from chalicelib.state import instances

app = Chalice(app_name="tfbatch")
api = V3Api(app, binary_types=models.ARCHIVE_TYPES)

INSTANCE = "/v3/wml_instances/{instance_id}"
MODELS = INSTANCE + "/published_models"
MODEL = MODELS + "/{model_id}"
MODEL_DEPLOYMENTS = MODEL + "/deployments"
INSTANCE_DEPLOYMENTS = INSTANCE + "/deployments"
ASSETS = "/v3/ml_assets/models"


@api.route("/v3/identity/token", methods=["GET", "POST"], public=True)
def issue_token(call):
    return identity.issue_token(call)


@api.route("/v3/identity/token", methods=["PUT"], public=True)
def refresh_token(call):
    return identity.refresh_token(call)


@api.route("/v2/identity/token", methods=["GET"], public=True)  # the IBM client's second token call
def issue_token_v2(call):
    return identity.issue_token(call)


@api.route(INSTANCE, methods=["GET"])
def get_instance(call, instance_id):
    return views.instance(instances.get(instance_id), call.base_url)


@api.route(MODELS, methods=["GET"])
def list_models(call, instance_id):
    return models.list_page(call, instance_id)


@api.route(MODELS, methods=["POST"], status=201)
def create_model(call, instance_id):
    return models.create(call, instance_id)


@api.route(MODEL, methods=["GET"])
def get_model(call, instance_id, model_id):
    return models.get(call, instance_id, model_id)


@api.route(MODEL, methods=["DELETE"], status=204)
def delete_model(call, instance_id, model_id):
    return models.delete(call, instance_id, model_id)


@api.route(MODEL + "/content", methods=["PUT"], status=202, content_types=models.ARCHIVE_TYPES)
def upload_model_content(call, instance_id, model_id):
    return models.upload_content(call, instance_id, model_id)


@api.route(MODEL + "/uploads", methods=["POST"], status=201)
def start_model_upload(call, instance_id, model_id):
    return models.start_upload(call, instance_id, model_id)


@api.route("/v3/ml_assets/models/{model_id}/versions/{version_id}", methods=["GET"])
def get_model_version(call, model_id, version_id):
    return models.get_version(call, model_id, version_id)


@api.route(ASSETS, methods=["POST"], status=201)
def create_model_asset(call):
    return models.create_asset(call)


@api.route(ASSETS + "/{model_id}", methods=["DELETE"], status=204)
def delete_model_asset(call, model_id):
    return models.delete_asset(call, model_id)


@api.route(ASSETS + "/{model_id}/versions/{version_id}/content", methods=["PUT"], content_types=models.ARCHIVE_TYPES)
def upload_model_version(call, model_id, version_id):
    return models.upload_version(call, model_id, version_id)


@api.route(MODEL_DEPLOYMENTS, methods=["POST"], status=201)
def create_deployment(call, instance_id, model_id):
    return deployments.create(call, instance_id, model_id)


@api.route(INSTANCE_DEPLOYMENTS, methods=["POST"], status=201)
def create_deployment_for_instance(call, instance_id):
    return deployments.create(call, instance_id)


@api.route(MODEL_DEPLOYMENTS, methods=["GET"])
def list_model_deployments(call, instance_id, model_id):
    return deployments.list_page(call, instance_id, model_id)


@api.route(INSTANCE_DEPLOYMENTS, methods=["GET"])
def list_deployments(call, instance_id):
    return deployments.list_page(call, instance_id)


@api.route(MODEL_DEPLOYMENTS + "/{deployment_id}", methods=["GET"])
def get_model_deployment(call, instance_id, model_id, deployment_id):
    return deployments.get(call, instance_id, deployment_id, model_id)


@api.route(INSTANCE_DEPLOYMENTS + "/{deployment_id}", methods=["GET"])
def get_deployment(call, instance_id, deployment_id):
    return deployments.get(call, instance_id, deployment_id)


@api.route(MODEL_DEPLOYMENTS + "/{deployment_id}", methods=["DELETE"], status=204)
def delete_model_deployment(call, instance_id, model_id, deployment_id):
    return deployments.delete(call, instance_id, deployment_id, model_id)


@api.route(INSTANCE_DEPLOYMENTS + "/{deployment_id}", methods=["DELETE"], status=204)
def delete_deployment(call, instance_id, deployment_id):
    return deployments.delete(call, instance_id, deployment_id)


@api.route(INSTANCE_DEPLOYMENTS + "/{deployment_id}/result_files", methods=["GET"])
def list_result_files(call, instance_id, deployment_id):
    return deployments.result_files(call, instance_id, deployment_id)


@api.route(INSTANCE_DEPLOYMENTS + "/{deployment_id}/online", methods=["POST"])
def score_online(call, instance_id, deployment_id):
    return online_requests.score(instance_id, deployment_id, call.request.raw_body or b"", here=_score_here)


def _score_here(instance_id, deployment_id, body):
    from chalicelib.scoring import online  # TensorFlow: only where no scoring function is named (one machine)

    return online.score(instance_id, deployment_id, body)


@app.route("/dashboard", methods=["GET"])
def dashboard_page():
    return dashboard.page()


@app.route("/dashboard/{name}", methods=["GET"])
def dashboard_file(name):
    return dashboard.asset(name)


@app.lambda_function(name="score_online")
def score_online_function(event, context):
    from chalicelib.scoring import online  # the TensorFlow image function the API invokes

    return online.handle_invoke(event)


@app.on_sqs_message(queue=get_settings().tasks_queue, batch_size=10)
def handle_tasks(event):
    return worktasks.handle_batch(event.to_dict(), event.context)


@app.schedule(Rate(1, unit=Rate.MINUTES))
def poll_stores(event):
    return worktasks.poll_stores()


api.refuse_other_methods()  # after the last route: a wrong method gets a v3 405, here and on API Gateway
