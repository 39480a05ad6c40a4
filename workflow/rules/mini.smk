# Regenerate the shipped miniature model from its seed (not part of `all`):
#     snakemake --cores 2 pretrain_mini
# It trains into results/mini-idefics2 and checks that the weights are bit-for-bit the shipped
# ones (models/mini-idefics2/pretrain.json records their sha256). Not declared in dvc.yaml, so
# that `dvc repro` never retrains it.


rule pretrain_mini:
    localrule: True
    input:
        shipped="models/mini-idefics2/pretrain.json",
    output:
        directory("results/mini-idefics2"),
    log:
        "results/logs/pretrain-mini/mini-idefics2.log",
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic pretrain-mini --from-record {input.shipped} --out {output} --verify {input.shipped} --log {log}"
