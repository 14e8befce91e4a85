"""Models and datasets by hub id ("Qwen/Qwen2.5-0.5B-Instruct"), through huggingface_hub and its cache.

With a network, a hub id is downloaded into the Hugging Face cache (HF_HOME / HF_HUB_CACHE) as every Hugging Face
tool does, and read from there afterwards; with HF_HUB_OFFLINE=1 (read by huggingface_hub when it is imported)
only the cache is read. Models come as safetensors, configs and tokenizer files: pickled weights are never
fetched, and a model's Python code only with trust_remote_code=True. Datasets come as their data files (JSON lines,
JSON, CSV, Parquet, Arrow, text), never as loading scripts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fasttune.errors import FasttuneError

MODEL_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]
"""Configs, safetensors weights, tokenizer files (tokenizer.json, merges.txt, sentencepiece .model, tiktoken),
chat templates."""
CODE_FILES = ["*.py"]
DATASET_FILES = ["*.jsonl", "*.json", "*.csv", "*.tsv", "*.parquet", "*.arrow", "*.txt", "*.gz", "*.md"]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def looks_like_hub_id(name: str | os.PathLike | None) -> bool:
    """Whether `name` reads as "owner/name" and is no local path (a local folder of that name wins)."""
    text = str(name)
    return name is not None and _HUB_ID.fullmatch(text) is not None and not Path(text).parent.exists()


def model_folder(repo_id: str, *, trust_remote_code: bool = False, revision: str | None = None) -> Path:
    """The local snapshot folder of model `repo_id`: downloaded into the hub cache when online, else the cached one."""
    return _snapshot(repo_id, "model", MODEL_FILES + (CODE_FILES if trust_remote_code else []), revision)


def dataset_folder(repo_id: str, *, revision: str | None = None) -> Path:
    """The local snapshot folder of dataset `repo_id` (its data files), downloaded or cached like `model_folder`."""
    return _snapshot(repo_id, "dataset", DATASET_FILES, revision)


def model_name(folder: Path) -> str:
    """A model's name: the repository name for a hub cache snapshot (models--org--name/snapshots/<sha>), else the
    folder's name."""
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent.name.split("--")[-1]
    return folder.name


def _snapshot(repo_id: str, repo_type: str, patterns: list[str], revision: str | None) -> Path:
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{repo_type} hub id '{repo_id}'" + (f" at revision {revision}" if revision else "")
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, repo_type=repo_type, revision=revision,
                                                      allow_patterns=patterns))
    except LocalEntryNotFoundError as error:
        if constants.is_offline_mode():
            raise FasttuneError(
                f"The {where} is not in the local hub cache, and HF_HUB_OFFLINE=1 allows nothing else "
                f"(cache={constants.HF_HUB_CACHE}). Download it once where there is a network "
                f"(`hf download {repo_id}{' --repo-type dataset' if repo_type == 'dataset' else ''}`) into this "
                "cache, or unset HF_HUB_OFFLINE.") from None
        raise FasttuneError(f"The {where} could not be downloaded and is not in the local hub cache "
                            f"(cache={constants.HF_HUB_CACHE}): {str(error).splitlines()[0][:300]}. Check the "
                            "network, or download it where there is one.") from None
    except GatedRepoError:
        raise FasttuneError(f"The {where} is gated: accept its terms on the hub, then log in (`hf auth login`) "
                            "or set HF_TOKEN.") from None
    except RepositoryNotFoundError:
        raise FasttuneError(f"The {where} does not exist on the hub, or is private (log in with `hf auth login` or "
                            "set HF_TOKEN). Check its spelling.") from None
    except RevisionNotFoundError:
        raise FasttuneError(f"The {where} has no such revision. Check the branch, tag or commit.") from None
    except HfHubHTTPError as error:
        raise FasttuneError(f"The hub refused the {where} ({str(error).splitlines()[0][:300]}).") from None
