rule report:
    input:
        unpack(report_inputs),
        settings=settings("report"),
    output:
        summary_csv=update("results/summary.csv"),
        summary_md=update("results/summary.md"),
        score_by_method=update("results/plots/score_by_method.png"),
        training_curves=update("results/plots/training_curves.png"),
        score_vs_shots=update("results/plots/score_vs_shots.png"),
    log:
        "results/logs/report/report.log",
    localrule: True
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic report --params params.yaml --log {log}"
