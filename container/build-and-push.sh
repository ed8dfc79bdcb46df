#!/usr/bin/env bash
# Build the TensorFlow image (container/Dockerfile) and push it to ECR, for `make package`'s
# ImageUri parameter. Needs Docker and the AWS CLI with credentials for the target account.
#   REGION (default: the CLI's region)  REPOSITORY (default: tfbatch)  TAG (default: git commit)
# Where Docker is missing, it prints the commands it would run and exits non-zero: nothing was built.
set -euo pipefail
cd "$(dirname "$0")/.."

REPOSITORY=${REPOSITORY:-tfbatch}
TAG=${TAG:-$(git rev-parse --short HEAD 2>/dev/null || echo latest)}
REGION=${REGION:-$(aws configure get region 2>/dev/null || echo '<region>')}
ACCOUNT=$(aws sts get-caller-identity --query Account --output text 2>/dev/null || echo '<account-id>')
REGISTRY="$ACCOUNT.dkr.ecr.$REGION.amazonaws.com"
IMAGE="$REGISTRY/$REPOSITORY:$TAG"

steps=(
  "aws ecr describe-repositories --region $REGION --repository-names $REPOSITORY >/dev/null 2>&1 || aws ecr create-repository --region $REGION --repository-name $REPOSITORY --image-scanning-configuration scanOnPush=true"
  "aws ecr get-login-password --region $REGION | docker login --username AWS --password-stdin $REGISTRY"
  "docker build --platform linux/amd64 -f container/Dockerfile -t $IMAGE ."
  "docker push $IMAGE"
)

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "No Docker engine here, so the image cannot be built on this machine. On one with Docker, this runs:"
  printf '  %s\n' "${steps[@]}"
  echo "then pass ImageUri=$IMAGE to the stack (see README, Deploy to AWS)."
  exit 1
fi
for step in "${steps[@]}"; do
  echo "+ $step"
  bash -c "$step"
done
echo "ImageUri=$IMAGE"
