"""farfield.datasets.structures: file names users have, chains, SEQRES mapping, DeepFRI's golden distance
maps (missing-residue policy), and downloads against a local HTTP server on 127.0.0.1 (success, corrupt
file, 404, resume, cache check, offline)."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from _http import RangeHandler, serve
from farfield.datasets import structures as st
from farfield.errors import ConfigError, InputError
from farfield.io.residues import ResidueView


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def examples(data_dir) -> Path:
    return data_dir / "function" / "deepfri_examples"


def test_find_structure_accepts_the_names_users_have(tmp_path, structures):
    src = structures / "1aki.pdb"
    names = ["1abc.cif", "2DEF.cif.gz", "3GHI-A.pdb", "4jkl_B.pdb", "pdb5mno.ent.gz", "6pqr.bcif",
             "ab/pdb7abx.ent", "3ghi.cif", "notes.txt", "1abc.txt", "abcd.pdb"]
    for n in names:
        (tmp_path / "s" / n).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp_path / "s" / n)
    idx = st.StructureIndex([tmp_path / "s"])
    root = tmp_path / "s"
    assert idx.find("1ABC") == root / "1abc.cif"
    assert idx.find("2def") == root / "2DEF.cif.gz"
    assert idx.find("3GHI-A") == root / "3GHI-A.pdb"                     # chain-specific file first
    assert idx.find("3ghi", chain="a") == root / "3GHI-A.pdb"            # case-insensitive chain
    assert idx.find("3GHI-B") == root / "3ghi.cif"                       # other chains: the entry file
    assert idx.find("4JKL", chain="B") == root / "4jkl_B.pdb"
    assert idx.find("4JKL-C") is None                                    # only chain B is there
    assert idx.find("5mno") == root / "pdb5mno.ent.gz"
    assert idx.find("6PQR") == root / "6pqr.bcif"
    assert idx.find("7abx") == root / "ab" / "pdb7abx.ent"               # archive layout, recursive
    assert idx.find("9zzz") is None
    assert st.find_structure("1abc", [tmp_path / "missing", root]) == root / "1abc.cif"
    with pytest.raises(InputError, match="PDB ID"):
        idx.find("not-an-id")


def test_load_chain_selects_and_reports(structures, examples, tmp_path):
    s = st.load_chain(structures / "4hhb.pdb", "B")
    assert set(s.chain_id) == {"B"} and not s.is_water.any() and not s.is_hydrogen.any()
    with pytest.raises(InputError, match=r"no chain 'Z' \(chains: \['A', 'B', 'C', 'D'"):
        st.load_chain(structures / "4hhb.pdb", "Z")
    # a chain file written with a blank chain ID, named after its chain
    text = (examples / "1S3P-A.pdb").read_text().splitlines()
    blank = [ln[:21] + " " + ln[22:] if ln.startswith(("ATOM", "HETATM")) else ln for ln in text]
    (tmp_path / "1S3P-A.pdb").write_text("\n".join(blank) + "\n")
    assert len(ResidueView.from_structure(st.load_chain(tmp_path / "1S3P-A.pdb", "A"))) == 109
    assert len(ResidueView.from_structure(st.load_chain(structures / "1aki.bcif", "A"))) == 129


def test_seqres_and_alignment(structures):
    assert st.read_seqres(structures / "1aki.cif", "A").startswith("KVFGRCELAAAMKRHGL")
    assert len(st.read_seqres(structures / "4hhb.pdb", "A")) == 141                   # SEQRES records
    assert st.read_seqres(structures / "4hhb.pdb", "Q") is None
    assert st.seqres_index("ACDEGH", "ACDEGH").tolist() == list(range(6))
    assert st.seqres_index("ACDEGH", "MACDKKEGHW").tolist() == [1, 2, 3, 6, 7, 8]   # gap and tails
    assert st.seqres_index("ACDQGH", "MACDKKEGHW").tolist() == [1, 2, 3, 6, 7, 8]   # a point mutation
    # a missing loop next to a repeated residue: the alignment may put the gap on either side of it; the
    # author numbering (2, 3, 4 | 8, 9) places it exactly, mismatches tolerated
    assert st.seqres_index("GAAKL", "MGAAKAAKL", numbers=[2, 3, 4, 8, 9]).tolist() == [1, 2, 3, 7, 8]
    assert st.seqres_index("GAAKW", "MGAAKAAKL", numbers=[2, 3, 4, 8, 9], min_identity=0.8).tolist() == [1, 2, 3, 7, 8]
    assert st.seqres_index("GAAKL", "MGAAKAAKL").tolist() != [1, 2, 3, 7, 8]   # the alignment alone errs here


def test_deepfri_golden_distance_maps(examples):
    """Resolved residues only, with their SEQRES index: CA-CA distances equal DeepFRI's maps at those
    positions; 2W83-E's three unresolved C-terminal residues are DeepFRI's padding (10000, 1 next to the
    diagonal among padded residues) and are not nodes."""
    for name, chain, n_res, n_seq in (("1S3P-A", "A", 109, 109), ("2W83-E", "E", 162, 165)):
        gold = np.load(examples / f"{name}.npz")
        seqres = str(gold["seqres"])
        rv = ResidueView.from_structure(st.load_chain(examples / f"{name}.pdb", chain))
        assert len(rv) == n_res and len(seqres) == n_seq
        idx = st.seqres_index(rv.sequence, seqres)
        ca_map = gold["C_alpha"]
        dist = np.linalg.norm(rv.ca[:, None] - rv.ca[None], axis=-1)
        np.testing.assert_allclose(ca_map[np.ix_(idx, idx)], dist, atol=1e-5)
        padded = np.setdiff1d(np.arange(n_seq), idx)
        assert padded.tolist() == list(range(n_res, n_seq))       # 2W83-E: SEQRES positions 162, 163, 164
        full = st.deepfri_distance_map(rv.ca, idx, len(seqres))
        np.testing.assert_allclose(full, ca_map, atol=1e-5)
        # C-beta map: real CB atoms agree wherever neither residue is a glycine
        cb = {}
        s = st.load_chain(examples / f"{name}.pdb", chain)
        for i in range(n_res):
            m = (rv.atom_residue == i) & (s.atom_name == "CB")
            if m.any():
                cb[i] = s.coords[np.flatnonzero(m)[0]]
        keep = np.array(sorted(cb))
        pts = np.stack([cb[i] for i in keep])
        np.testing.assert_allclose(gold["C_beta"][np.ix_(idx[keep], idx[keep])],
                                   np.linalg.norm(pts[:, None] - pts[None], axis=-1), atol=1e-5)
    assert ca_map[162:, 162:].tolist() == [[1, 1, 1e4], [1, 1, 1], [1e4, 1, 1]]
    assert (ca_map[:162, 162:] == st.PAD_DISTANCE).all()


# --------------------------------------------------------------------------------------------- downloads
_Handler = RangeHandler          # its class attribute ``log`` records the requests


@pytest.fixture
def server(tmp_path, structures):
    root = tmp_path / "served"
    root.mkdir()
    shutil.copyfile(structures / "1aki.cif", root / "1AKI.cif")
    shutil.copyfile(structures / "1aki.bcif", root / "1aki.bcif")
    (root / "2BAD.cif").write_text("data_2BAD\n_this is not a structure\n")
    with serve(root) as base:
        yield root, base


def test_fetch_success_corrupt_404_cache_and_recheck(server, tmp_path):
    root, base = server
    dest = tmp_path / "pdb"
    with pytest.warns(UserWarning, match=r"2 of 3 structure\(s\) could not be fetched") as rec:
        got, failed = st.fetch_structures(["1aki", "2BAD-A", "3NOP"], dest, base_url=base + "/{ID}.cif",
                                          offline=False, workers=3, progress=False)
    msg = str(rec[0].message)
    assert "HTTP 404" in msg and "does not parse" in msg and f"{base}/3NOP.cif" in msg
    assert sorted(failed) == ["2BAD", "3NOP"] and list(got) == ["1AKI"]
    assert got["1AKI"] == dest / "1aki.cif"
    assert got["1AKI"].read_bytes() == (root / "1AKI.cif").read_bytes()
    assert not (dest / "2bad.cif").exists()                              # a file that does not parse is dropped
    n = len(_Handler.log)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again, failed = st.fetch_structures(["1AKI"], dest, base_url=base + "/{ID}.cif", offline=False)
    assert again == got and failed == [] and len(_Handler.log) == n     # cached: no request
    # a cached file that changed since it was verified is detected (manifest MD5) and fetched again
    (dest / "1aki.cif").write_text("data_garbage\n")
    again, failed = st.fetch_structures(["1AKI"], dest, base_url=base + "/{ID}.cif", offline=False)
    assert again["1AKI"].read_bytes() == (root / "1AKI.cif").read_bytes() and len(_Handler.log) == n + 1


def test_fetch_bcif_and_resume(server, tmp_path):
    root, base = server
    dest = tmp_path / "pdb"
    dest.mkdir()
    data = (root / "1aki.bcif").read_bytes()
    (dest / "1aki.bcif.part").write_bytes(data[:1000])                  # an interrupted download
    got, failed = st.fetch_structures(["1aki"], dest, base_url=base + "/{id}.bcif", fmt="bcif", offline=False)
    assert failed == [] and got["1AKI"].read_bytes() == data
    assert _Handler.log[-1] == ("/1aki.bcif", "bytes=1000-") and not (dest / "1aki.bcif.part").exists()
    with pytest.raises(ConfigError, match="MMTF"):
        st.fetch_structures(["1aki"], dest, fmt="mmtf")


def test_resume_at_the_wrong_offset_is_refused_and_the_manifest_is_kept(tmp_path, structures):
    from _http import MisplacedRangeHandler
    root = tmp_path / "served"
    root.mkdir()
    shutil.copyfile(structures / "1aki.cif", root / "1AKI.cif")
    dest = tmp_path / "pdb"
    dest.mkdir()
    data = (root / "1AKI.cif").read_bytes()
    (dest / "1aki.cif.part").write_bytes(data[:500])
    with serve(root, MisplacedRangeHandler) as base:
        with pytest.warns(UserWarning, match="wrong offset"):
            got, failed = st.fetch_structures(["1AKI"], dest, base_url=base + "/{ID}.cif", offline=False)
        assert failed == ["1AKI"] and not (dest / "1aki.cif").exists() and not (dest / "1aki.cif.part").exists()
        got, failed = st.fetch_structures(["1AKI"], dest, base_url=base + "/{ID}.cif", offline=False)  # whole
    assert failed == [] and got["1AKI"].read_bytes() == data
    manifest = __import__("json").loads((dest / st._MANIFEST).read_text())
    assert manifest["1aki.cif"]["md5"] == __import__("hashlib").md5(data).hexdigest()


def test_fetch_offline_names_missing_files(server, tmp_path, structures):
    root, base = server
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copyfile(structures / "4hhb.pdb", mine / "4HHB.pdb")
    with pytest.raises(InputError) as e:
        st.fetch_structures(["4hhb-A", "1aki", "3nop"], tmp_path / "pdb", base_url=base + "/{ID}.cif",
                            search=[mine])
    msg = str(e.value)
    assert "2 structure file(s) missing and offline" in msg and f"{base}/1AKI.cif" in msg and "3NOP" in msg
    assert "4HHB" not in msg.split(":")[0] and str(mine) in msg and _Handler.log == []
    got, failed = st.fetch_structures(["4hhb"], tmp_path / "pdb", search=[mine])          # present: no network
    assert got == {"4HHB": mine / "4HHB.pdb"} and failed == []
