"""Exceptions, split by who must act: the user (bad input) or the machine (infrastructure)."""

from __future__ import annotations


class StapmatrixError(Exception):
    """Base class for every error the harness raises on purpose."""


class MatrixError(StapmatrixError):
    """The matrix file or a command-line value is wrong: the user must fix their input."""


class InfraError(StapmatrixError):
    """Docker, the archive, an image build or QEMU failed: the result says nothing about stap."""


class DockerUnavailableError(InfraError):
    """No Docker daemon answers."""


class BuildVerdictError(InfraError):
    """A build failed because of what was built (a compile error, a config option that did
    not take), not because of the machine: the same inputs fail the same way, so the verdict
    is remembered (an infrastructure failure never is)."""
