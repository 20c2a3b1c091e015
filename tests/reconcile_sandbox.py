"""A sandbox project whose Meta and LinkedIn forms can be reconciled (``form_ids`` and the
LinkedIn ad account set), for ``tests/test_reconcile.py`` and ``tests/test_trace.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leadrelay.config import load_config
from leadrelay.sandbox.server import SandboxServer
from tests.capture.sandbox_project import META_FORM_ID, Project, admin

LINKEDIN_FORM_ID = "9100001"
LINKEDIN_ACCOUNT = "500000001"

#: The demo Meta form, listing its platform form id; a LinkedIn form owned by the sandbox's
#: sponsored account.
FORMS = f"""
[forms.li-ads]
source = "linkedin_lead_gen"
destination = "hubspot"
mapping = "mappings/forms/li-ads.toml"
client_secret = "li-client-secret-reconcile"
access_token = "${{LINKEDIN_ACCESS_TOKEN}}"
api_url = "${{LINKEDIN_API_URL}}"
ca_bundle = "${{LEADRELAY_CA_BUNDLE}}"
ad_account = "{LINKEDIN_ACCOUNT}"
form_ids = ["{LINKEDIN_FORM_ID}"]
"""

LI_MAPPING = """
[fields]
email = "EMAIL"
first_name = "FIRST_NAME"
last_name = "LAST_NAME"
company = "COMPANY_NAME"
"""


class ReconcileProject(Project):
    """The ``sandbox --init`` project with reconcilable Meta and LinkedIn forms."""

    def __init__(self, folder: Path, sandbox: SandboxServer) -> None:
        super().__init__(folder, sandbox)
        toml = folder / "leadrelay.toml"
        text = toml.read_text(encoding="utf-8")
        # the sandbox project lists the Meta form the capture tests post to
        assert f'form_ids = ["{META_FORM_ID}"]\n' in text
        toml.write_text(text + FORMS, encoding="utf-8")
        (folder / "mappings" / "forms" / "li-ads.toml").write_text(LI_MAPPING, encoding="utf-8")
        self.config = load_config(toml, environ={})

    @property
    def toml(self) -> Path:
        return self.folder / "leadrelay.toml"

    def create_linkedin_lead(self, email: str, **extra: Any) -> str:
        """A response in the sandbox's LinkedIn, no notification sent; its URN."""
        created = admin(
            self.sandbox,
            "leads/linkedin",
            {
                "form_id": LINKEDIN_FORM_ID,
                "answers": {"EMAIL": email, "FIRST_NAME": "Li", "LAST_NAME": "Ng"},
                **extra,
            },
        )
        return str(created["id"])

    def create_meta(self, email: str, **extra: Any) -> str:
        """A lead in the sandbox's Meta, no notification sent; its id."""
        return self.meta_lead_with({"email": email, "full_name": "Ana Silva"}, **extra)


# -- fixtures (imported by the test modules) ----------------------------------------------------


@pytest.fixture(name="sandbox", scope="module")
def sandbox_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    """Every emulator on one HTTPS port, once per test module."""
    with SandboxServer(ca_dir=tmp_path_factory.mktemp("ca")) as running:
        yield running


@pytest.fixture(name="project")
def project_fixture(sandbox: SandboxServer, tmp_path: Path) -> Iterator[ReconcileProject]:
    """The reconcilable sandbox project on an emptied sandbox without faults."""
    admin(sandbox, "reset", {})
    admin(sandbox, "faults", {})
    opened = ReconcileProject(tmp_path, sandbox)
    yield opened
    opened.close()
