"""The service's structured logger (aws-lambda-powertools), shared by every handler."""
from aws_lambda_powertools import Logger

logger = Logger(service="tfbatch")
