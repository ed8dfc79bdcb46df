"""Request bodies, validated with pydantic; a failure names the field and what was expected."""
from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from chalicelib.core.errors import BadRequest, field

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
Text = Annotated[str, StringConstraints(max_length=4096)]


class Author(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: Annotated[str, StringConstraints(max_length=256)] = ""
    email: Annotated[str, StringConstraints(max_length=256)] = ""


class NewModel(BaseModel):
    """POST /published_models. Extra keys of the v3 body (training refs, etc.) are ignored."""

    model_config = ConfigDict(extra="ignore")
    name: Name
    description: Text = ""
    model_type: Annotated[str, StringConstraints(pattern=r"^tensorflow(-[0-9]+(\.[0-9]+)*)?$")] = Field(
        description="tensorflow or tensorflow-<version>, e.g. tensorflow-2.21"
    )
    runtime_environment: Annotated[str, StringConstraints(max_length=64)] = "python-3.11"
    author: Author = Author()


class Framework(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: Literal["tensorflow"] = Field(description="tensorflow")
    version: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9]+(\.[0-9]+)*$")] = Field(
        description="the TensorFlow version the model was saved with, e.g. 2.21")


class NewAsset(BaseModel):
    """POST /v3/ml_assets/models, as the IBM client sends it: the framework instead of a model_type."""

    model_config = ConfigDict(extra="ignore")
    name: Name
    description: Text = ""
    framework: Framework
    author: Author = Author()

    def as_model(self) -> NewModel:
        return NewModel(name=self.name, description=self.description, author=self.author,
                        model_type=f"{self.framework.name}-{self.framework.version}")


Schema = TypeVar("Schema", bound=BaseModel)


def parse(schema: type[Schema], body: dict) -> Schema:
    try:
        return schema.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        name = ".".join(str(part) for part in first["loc"]) or "body"
        problem = "is required" if first["type"] == "missing" else f"is invalid: {first['msg']}"
        hint = schema.model_fields.get(str(first["loc"][0])) if first["loc"] else None
        expected = f" (expected {hint.description})" if hint is not None and hint.description else ""
        raise BadRequest(f"Field '{name}' {problem}{expected}.", target=field(name)) from None


Bucket = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=63,
                                          pattern=r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")]
Prefix = Annotated[str, StringConstraints(max_length=512)]


class Keys(BaseModel):
    """Connection to an S3-compatible store. `url` is its endpoint; empty means AWS S3."""

    model_config = ConfigDict(extra="ignore")
    access_key: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    secret_key: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    url: Annotated[str, StringConstraints(strip_whitespace=True, max_length=512,
                                          pattern=r"^(https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?/?)?$")] = Field(
        "", description="the store's endpoint, http(s)://host[:port]")
    region: Annotated[str, StringConstraints(max_length=32, pattern=r"^[a-z0-9\-]*$")] = ""


class Location(BaseModel):
    model_config = ConfigDict(extra="ignore")
    bucket: Bucket = Field(description="an S3 bucket name")
    prefix: Prefix = ""


StoreType = Literal["cloudobjectstorage", "s3"]


class InputConnection(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: StoreType = Field(description="cloudobjectstorage or s3")
    source: Location
    connection: Keys


class OutputConnection(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: StoreType = Field(description="cloudobjectstorage or s3")
    target: Location
    connection: Keys


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    guid: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class NewDeployment(BaseModel):
    """POST .../deployments: the seed's batch body, or an online one (no locations). On the
    instance path the model is `published_model` or, as the IBM client sends it,
    `deployable_asset_url` (the published model's URL)."""

    model_config = ConfigDict(extra="ignore")
    name: Name
    description: Text = ""
    type: Literal["batch", "online"] = Field(description="batch or online")
    input: InputConnection | None = None
    output: OutputConnection | None = None
    signature_name: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    published_model: ModelRef | None = None
    deployable_asset_url: Annotated[str, StringConstraints(max_length=2048)] | None = None
