"""Every method's default settings, in one place: the papers' values (or their released code's).

The methods (:mod:`regionedit.methods`, :mod:`regionedit.core`), the editors
(:mod:`regionedit.editors`), the command line (:mod:`regionedit.cli`), the web app
(:mod:`regionedit.app`) and the batch runner (:mod:`regionedit.batch`) all read their defaults from
here, so a setting left out means the same thing everywhere. The method modules keep their
``DEFAULT_*`` names as aliases of these constants. This module imports nothing (``regionedit
--help`` reads it without loading torch). The default *models* of each command are in
:mod:`regionedit.models.defaults`.

Sources:

- DDPM: "An Edit Friendly DDPM Noise Space: Inversion and Manipulations" (Huberman-Spiegelglas,
  Kadar & Michaeli, CVPR 2024) and its released code (``inbarhub/DDPM_inversion``): 100 steps,
  source CFG 3.5, target CFG 15, skip 36, η = 1.
- P2P: the same code's Prompt-to-Prompt variant (Hertz et al., ICLR 2023, on the edit-friendly
  inversion): skip 12, target CFG 9, cross-attention edited for 60 % and self-attention injected
  for 20 % of the steps; on a DDIM inversion skip 0, 80 % / 40 % (P2P's own notebooks); local
  blending threshold 0.3 (P2P's ``LocalBlend``).
- ZONE: "ZONE: Zero-Shot Instruction-Guided Local Editing" (Li et al., CVPR 2024): 20 steps, text
  guidance 7.5, image guidance 1.5, fusion β 0.2 for remove and 0.01 otherwise, attention threshold
  T = 128 on 0..255 at maps 1/32 of the image side, FFT edge smoother D0 = 200 at 512²; 450
  training and 150 held-out instructions for the action classifier. Ours: the dilation (15 px at
  512²; the paper gives none) and the smoother's binarisation threshold 0.1.
- RDM: "Region-Aware Diffusion for Zero-shot Text-driven Image Editing" (Huang et al., 2023):
  mask threshold K = 150 on 0..255 (paper; its code used 100); from its released code: 50 steps,
  classifier-free guidance 5, CLIP guidance scale 150 with 16 cutouts, NERP weights 10000 (MSE)
  and 1000 (LPIPS). Ours: deterministic DDIM sampling (η = 0).
- RBE: "Unsupervised Region-Based Image Editing of Denoising Diffusion Models" (Li et al., AAAI
  2025) and its released code: the Jacobian at t = 500 of a 40-step DDIM schedule, 50 subspace
  iterations, γ = ±30; k = 3 directions and a complement of rank 16 are ours (the code removes
  rank 1; 16 was chosen on validation faces). Directions are applied with deterministic DDIM (η = 0; the code samples with 0.5).
- JICA: "Enabling Local Editing in Diffusion Models by Joint and Individual Component Analysis"
  (Kouzelis et al., BMVC 2024) has no public code; ours: SVD rank p = 10, joint rank r_C = 2,
  individual rank r_A = 3, at RBE's timestep and schedule.

Settings that are ours alone (no paper value) are marked so below.
"""

from __future__ import annotations

# -------------------------------------------------------- edit-friendly DDPM inversion and editing
DDPM_STEPS = 100
DDPM_SOURCE_GUIDANCE = 3.5
DDPM_TARGET_GUIDANCE = 15.0
DDPM_SKIP = 36
DDPM_ETA = 1.0
DDPM_BATCH_SIZE = 16  # ours: timesteps per batched UNet call (the same maps as the paper's loop)

# ------------------------------------------------------------ Prompt-to-Prompt (edit-friendly code)
P2P_SKIP = 12
P2P_TARGET_GUIDANCE = 9.0
P2P_CROSS_REPLACE = 0.6
P2P_SELF_REPLACE = 0.2
P2P_DDIM_SKIP = 0
P2P_DDIM_CROSS_REPLACE = 0.8
P2P_DDIM_SELF_REPLACE = 0.4
P2P_BLEND_THRESHOLD = 0.3

# ------------------------------------------------------------------------------------------ ZONE
ZONE_STEPS = 20
ZONE_TEXT_GUIDANCE = 7.5
ZONE_IMAGE_GUIDANCE = 1.5
ZONE_BETA = {"remove": 0.2, "change": 0.01, "add": 0.01}
ZONE_THRESHOLD = 128
ZONE_LOCALISATION = "attention"  # the paper; "change" reads the edit itself (ours, see methods/zone.py)
ZONE_CHANGE_THRESHOLD = 0.05  # ours (validation split): mean |edited − original| over RGB in [0, 1]
ZONE_ATTENTION_FRACTION = 1 / 32
ZONE_SMOOTHER_THRESHOLD = 0.1  # ours
ZONE_KEEP_SEGMENT = False  # the paper: M* is the smoothed change alone (True for the toy models: methods/zone.py)
ZONE_KEEP_SEGMENT_LIMIT = None  # ours: with keep_segment, keep M_f only up to this many times M*'s area (None: always)
ZONE_ETA = 0.0  # ours: deterministic DDIM sampling
ZONE_D0_AT_512 = 200.0
ZONE_DILATION_AT_512 = 15  # ours: the paper dilates without giving the size
ZONE_TRAIN_INSTRUCTIONS = 450
ZONE_TEST_INSTRUCTIONS = 150

# ------------------------------------------------------------------------------------------- RDM
RDM_STEPS = 50
RDM_GUIDANCE = 5.0
RDM_THRESHOLD = 150
RDM_CLIP_SCALE = 150.0
RDM_CUTOUTS = 16
RDM_NERP_MSE = 10000.0
RDM_NERP_LPIPS = 1000.0
RDM_ETA = 0.0  # ours

# -------------------------------------------------------------------- RBE and JICA (h-space)
HSPACE_TIMESTEP = 500
HSPACE_STEPS = 40
HSPACE_JVP = "finite-difference"  # ours: J·v by central differences (or "autodiff")
HSPACE_MAX_ITERATIONS = 50
HSPACE_TOLERANCE = 1e-5  # ours
HSPACE_ETA = 0.0  # ours: deterministic DDIM when applying a direction
RBE_K = 3  # ours
RBE_COMPLEMENT_RANK = 16  # ours (the code: 1), chosen on validation faces: bench/results/rbe-complement-rank-validation-cpu.json
RBE_STRENGTH = 30.0
RBE_STRIP = (-30.0, -15.0, 0.0, 15.0, 30.0)  # γ values of a slider strip
JICA_SVD_RANK = 10  # ours (no public code)
JICA_JOINT_RANK = 2  # ours
JICA_INDIVIDUAL_RANK = 3  # ours
