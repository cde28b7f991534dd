"""Language models of the lecture, trained and compared on one corpus (the embedded KJV):
vocabularies and data (`vocab`, `data`), n-gram LMs with add-k and interpolated Kneser-Ney
(`ngram`), the fixed-context neural LM (`fixed_context`), the RNN LM on rnnkern.nn.RNN (`rnn_lm`),
sampling (`sampling`), training/evaluation/checkpoints (`train`), the `rnnkern lm` CLI (`cli`),
the hand-wired threshold RNNs (`parity`) and the `make demo` run (`demo`)."""
from rnnkern.models.language.data import CorpusError, batchify, bptt_chunks, build_corpus, load_text, split_text
from rnnkern.models.language.fixed_context import FixedContextLM
from rnnkern.models.language.ngram import NGramLM
from rnnkern.models.language.parity import ComparisonRNN, ParityRNN, SummationRNN
from rnnkern.models.language.rnn_lm import RNNLM
from rnnkern.models.language.sampling import generate, sample_logits
from rnnkern.models.language.vocab import Vocab

__all__ = ["CorpusError", "batchify", "bptt_chunks", "build_corpus", "load_text", "split_text", "FixedContextLM",
           "NGramLM", "ComparisonRNN", "ParityRNN", "SummationRNN", "RNNLM", "generate", "sample_logits", "Vocab"]
