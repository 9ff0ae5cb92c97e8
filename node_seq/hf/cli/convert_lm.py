#!/usr/bin/env python
"""Convert a fairseq ``node_transformer_lm`` checkpoint into an HF folder (see node_seq/hf/convert_lm.py).

    python -m node_seq.hf.cli.convert_lm --checkpoint CK/checkpoint_best.pt --data-bin DATA/bin --out HF_DIR [--remote-code]
"""

from node_seq.hf.convert_lm import main

if __name__ == "__main__":
    main()
