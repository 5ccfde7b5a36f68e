using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Tests.Graph;

/// <summary>
/// Small random-weight models of the families the example checkpoint does not cover (qwen3 with q/k norms, llama with
/// llama3 rope scaling and attention biases), as a config.json in a temp folder plus an in-memory checkpoint.
/// Weights are bf16-exact so activation-dtype storage loses nothing.
/// </summary>
internal static class SyntheticModels
{
    public static (string Dir, ICheckpoint Checkpoint) Create(string name, string configJson)
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmbuild-synthetic", name);
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, "config.json");
        if (!File.Exists(path) || File.ReadAllText(path) != configJson) File.WriteAllText(path, configJson);
        var config = ModelConfig.Load(dir);
        var family = ModelFamilies.Get(config.ModelType);
        var rng = new Random(name.Aggregate(17, (a, ch) => a * 31 + ch));
        var tensors = new Dictionary<string, (long[] Shape, float[] Data)>(StringComparer.Ordinal);
        int h = config.HiddenSize, qd = config.QDim, kvd = config.KvDim, inter = config.IntermediateSize, d = config.HeadDim;
        void Add(string tensor, long[] shape, float center, float spread)
        {
            var data = new float[shape.Aggregate(1L, (a, b) => a * b)];
            for (int i = 0; i < data.Length; i++) data[i] = TestWeightSource.ToBf16(center + spread * (float)(rng.NextDouble() * 2 - 1));
            tensors[tensor] = (shape, data);
        }
        bool bias = configJson.Contains("\"attention_bias\": true") || config.ModelType == "qwen2";
        Add(family.TensorName(WeightRole.Embedding), [config.VocabSize, h], 0, 0.5f);
        for (int l = 0; l < config.NumLayers; l++)
        {
            string N(WeightRole r) => family.TensorName(r, l);
            Add(N(WeightRole.InputNorm), [h], 1, 0.2f);
            Add(N(WeightRole.PostAttentionNorm), [h], 1, 0.2f);
            Add(N(WeightRole.QProj), [qd, h], 0, 0.15f);
            Add(N(WeightRole.KProj), [kvd, h], 0, 0.15f);
            Add(N(WeightRole.VProj), [kvd, h], 0, 0.15f);
            Add(N(WeightRole.OProj), [h, qd], 0, 0.15f);
            if (bias)
            {
                Add(N(WeightRole.QBias), [qd], 0, 0.1f);
                Add(N(WeightRole.KBias), [kvd], 0, 0.1f);
                Add(N(WeightRole.VBias), [kvd], 0, 0.1f);
                if (family.Has(WeightRole.OBias)) Add(N(WeightRole.OBias), [h], 0, 0.1f);
            }
            if (family.Has(WeightRole.QNorm))
            {
                Add(N(WeightRole.QNorm), [d], 1, 0.2f);
                Add(N(WeightRole.KNorm), [d], 1, 0.2f);
            }
            Add(N(WeightRole.MlpGate), [inter, h], 0, 0.15f);
            Add(N(WeightRole.MlpUp), [inter, h], 0, 0.15f);
            Add(N(WeightRole.MlpDown), [h, inter], 0, 0.1f);
        }
        Add(family.TensorName(WeightRole.FinalNorm), [h], 1, 0.2f);
        if (!config.TieWordEmbeddings) Add(family.TensorName(WeightRole.LmHead), [config.VocabSize, h], 0, 0.2f);
        return (dir, new MemoryCheckpoint(tensors));
    }

    public const string Qwen3 = """
    {"model_type": "qwen3", "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
     "head_dim": 16, "intermediate_size": 96, "vocab_size": 300, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
     "max_position_embeddings": 4096, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "hidden_act": "silu"}
    """;

    public const string Llama3 = """
    {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
     "intermediate_size": 128, "vocab_size": 257, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "attention_bias": true,
     "max_position_embeddings": 131072, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "hidden_act": "silu",
     "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
    """;

    private sealed class MemoryCheckpoint(Dictionary<string, (long[] Shape, float[] Data)> tensors) : ICheckpoint
    {
        public IReadOnlyList<string> TensorNames { get; } = tensors.Keys.Order(StringComparer.Ordinal).ToList();
        public string Directory => "memory";
        public IReadOnlyList<string> Files => [];
        public bool Contains(string name) => tensors.ContainsKey(name);
        public TensorInfo GetInfo(string name) => new(name, TensorDType.F32, tensors[name].Shape, "memory");
        public void ReadFloat32(string name, long elementOffset, Span<float> destination) =>
            tensors[name].Data.AsSpan((int)elementOffset, destination.Length).CopyTo(destination);
        public void ReadRaw(string name, long byteOffset, Span<byte> destination) => throw new NotSupportedException();
        public void Dispose() { }
    }
}
