"""A real `index_health` report for the README: 30,000 sentences stored one `remember` at a time.

Sentences from shared/data with their all-MiniLM-L6-v2 embeddings (cached), in sessions of 50,
through MemoryService with default settings, so the index has trained IVF on real vectors; then
one `recall_batch` of 64 of them, which loads the batch kernels.

    .venv/bin/python benchmarks/health_example.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from common import RESULTS, CachedEncoder, all_sentences, open_with_store, recall_batch, remember

from emx_mcp.config import Settings
from emx_mcp.schemas import HealthRequest
from emx_mcp.storage import ivf_batch

COUNT = 30_000


def main() -> None:
    sentences = all_sentences()[:COUNT]
    work = Path(tempfile.mkdtemp(prefix="emx-health-"))
    try:
        service, store = open_with_store(Settings(data_dir=work), CachedEncoder(sentences))
        for i, sentence in enumerate(sentences):
            remember(service, sentence, session=f"session-{i // 50}")
        index = store.index("default")
        assert index is not None
        index.wait_idle()
        recall_batch(service, sentences[:64])  # the first batch of 32+ loads the batch kernels
        ivf_batch.wait_ready()
        report = service.health(HealthRequest()).model_dump(mode="json")
        service.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "health_example.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
