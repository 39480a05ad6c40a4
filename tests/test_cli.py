from mimic.cli import main


def test_info_prints_the_idefics2_8b_parameter_count(capsys):
    assert main(["info", "--model", "idefics2-8b-base"]) == 0
    out = capsys.readouterr().out
    assert "32 layers x 32 heads x head_dim 128" in out
    assert "total=  263,168" in out  # v 131,072 + log-Z1 linears 132,096
    assert "total=  131,104" in out  # LIVE


def test_info_reads_a_local_model_config(tmp_path, capsys):
    from mimic.tiny import tiny_idefics3

    tiny_idefics3(layers=3).config.save_pretrained(tmp_path)
    assert main(["info", "--model", str(tmp_path)]) == 0
    # 3 layers x 4 heads x 8: v = 96, w = 96, b = 12
    assert "total=      204" in capsys.readouterr().out
