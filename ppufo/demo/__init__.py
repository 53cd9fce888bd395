"""Small, learnable synthetic datasets written in each dataset's real on-disk layout.

The demo sets (``WRITERS``): person and vehicle ReID and product retrieval (``reid``, drawn by
``identity``) and face recognition and verification (``face``). ``write_all`` writes them and
records each finished set in a manifest (``manifest``); ``ensure_demo_data`` (``setup``) writes the
missing ones before training when the config asks for it. ``EXTRA_SETS`` are written only when named:
``ufo_test_datasets`` (``released``) is the UFO reference's test-set tree made of the demo sets;
``custom_example`` (``custom``) is a logo set in the layouts of one's own data (ImageList, ImageFolder).
Every set has size knobs (``size_keywords``, checked by ``check_sizes``; Global.demo_sizes), which the
manifest records; ``sizing`` says how finely a test set of given sizes resolves a score.
Everything is deterministic given ``seed`` and the sizes.
"""
from .custom import write_custom_example
from .face import (face_identity_seed, render_face, verification_pairs, write_face_folder,
                   write_ms1m_recordio, write_verification_bin, write_verification_filelist)
from .identity import SIZES, STYLES, identity_traits, render_identity
from .reid import (camera_seed, identity_seed, write_dukemtmc, write_market1501, write_msmt17,
                   write_sop, write_vehicleid, write_veri776, write_veriwild)
from .sets import (EXTRA_SETS, FACE_VAL_PAIRS, MANIFEST, READERS, WRITERS, check_sizes, size_keywords, write_all,
                   written_sets)
from .setup import ensure_demo_data
from .sizing import resolution, scored_count, standard_error
from .released import UFO_TEST_SETS, ufo_test_sets, write_ufo_test_datasets

__all__ = ["EXTRA_SETS", "FACE_VAL_PAIRS", "MANIFEST", "READERS", "SIZES", "STYLES", "UFO_TEST_SETS",
           "WRITERS", "camera_seed", "check_sizes", "ensure_demo_data", "face_identity_seed", "identity_seed",
           "identity_traits", "render_face", "render_identity", "resolution", "scored_count", "size_keywords",
           "standard_error", "ufo_test_sets", "verification_pairs", "write_all", "write_custom_example",
           "write_dukemtmc", "write_face_folder", "write_market1501", "write_ms1m_recordio",
           "write_msmt17", "write_sop", "write_ufo_test_datasets", "write_vehicleid", "write_veri776",
           "write_verification_bin", "write_verification_filelist", "write_veriwild", "written_sets"]
