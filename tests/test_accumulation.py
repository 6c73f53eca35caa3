from ftlab import RunConfig
from ftlab.lessons.accumulation import accumulated_gradients
from ftlab.setup.data import load_data
from ftlab.setup.models import load_model


def test_token_normalised_accumulation_is_the_large_batch_and_the_mean_of_means_is_not():
    config = RunConfig(model="tiny", lora_r=0, max_seq_length=256, system_prompt="", train_size=16, eval_size=8,
                       exact_match_size=0)
    model, tokenizer = load_model(config)
    data = load_data(config, tokenizer)
    found = accumulated_gradients(model, [data.train[i] for i in range(8)], data.collator, micro_batch=2)
    assert found["tokens_min"] < found["tokens_max"]  # the micro-batches hold different numbers of label tokens
    assert found["token-normalised"] < 1e-5
    assert found["mean of micro-batch means"] > 100 * max(found["token-normalised"], 1e-7)
