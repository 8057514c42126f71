"""A serverless GenAI gateway for Azure OpenAI: one request handler for Azure Functions and a local host."""

__version__ = "0.1.0"
