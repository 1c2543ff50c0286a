"""The deployments/ documents rendered with the e2e image."""

from __future__ import annotations

from lab.kind.manifests import AGENT_MANIFEST, PROBE_MANIFEST, load_documents, with_image


def test_every_container_runs_the_e2e_image_and_the_source_is_untouched() -> None:
    documents = load_documents(AGENT_MANIFEST) + load_documents(PROBE_MANIFEST)
    rendered = with_image(documents, "minicni:e2e")
    images = [
        c["image"]
        for doc in rendered
        if "template" in doc.get("spec", {})
        for c in doc["spec"]["template"]["spec"]["containers"]
    ]
    assert len(images) == 4 and set(images) == {"minicni:e2e"}
    assert "minicni:e2e" not in str(documents)
