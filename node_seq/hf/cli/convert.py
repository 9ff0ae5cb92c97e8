#!/usr/bin/env python
"""Convert a fairseq ``node_transformer`` checkpoint into an HF folder (see node_seq/hf/convert.py).

    python -m node_seq.hf.cli.convert --checkpoint CK/checkpoint_best.pt --data-bin DATA/bin --out HF_DIR \\
        [--spm-model SPM.model | --bpe-codes CODES | --tokenizer tokenizer.json] [--remote-code]
"""

from node_seq.hf.convert import main

if __name__ == "__main__":
    main()
