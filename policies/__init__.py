"""The APIM policy language: XML documents, scopes, expressions and one module per statement.

The policy engine lands with its own issue; the gateway core runs without a policy document.
"""
