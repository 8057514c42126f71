"""Unit tests of the policy statements, one file per module of policies/statements/ (test_<module>.py)."""
