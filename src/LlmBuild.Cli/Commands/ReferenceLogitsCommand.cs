using System.CommandLine;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Reference;
using LlmBuild.Core.Runtime;

namespace LlmBuild.Cli.Commands;

/// <summary><c>llmbuild reference-logits MODEL_DIR --ids … [--all-positions] --out F.npy</c>: the f32 reference forward's logits.</summary>
public static class ReferenceLogitsCommand
{
    public static Command Create()
    {
        var modelDir = new Argument<string>("model-dir") { Description = "A Hugging Face checkpoint folder." };
        var ids = new Option<string>("--ids") { Description = "Token ids (1,2,3) or the path of a file of ids.", Required = true };
        var all = new Option<bool>("--all-positions") { Description = "Write the logits of every position ([n, vocab]) instead of the last ([1, vocab])." };
        var output = new Option<string>("--out") { Description = "The .npy file to write (f32).", Required = true };
        var image = ImageOption.Create("Vision-language models: an image whose embeddings (the f32 reference tower's) replace the image-pad ids of --ids; repeat for several.");
        var command = new Command("reference-logits", "Run the f32 reference forward straight from a checkpoint and write its logits as .npy.");
        command.Arguments.Add(modelDir);
        command.Options.Add(ids);
        command.Options.Add(all);
        command.Options.Add(output);
        command.Options.Add(image);
        command.SetAction(parse =>
        {
            int[] tokens = TokenIds.Parse(parse.GetValue(ids)!);
            string dir = parse.GetValue(modelDir)!;
            using ICheckpoint checkpoint = CheckpointLoader.Open(dir);
            var config = ModelConfig.Load(dir);
            var model = new ReferenceModel(checkpoint, config);
            string[] imagePaths = parse.GetValue(image) ?? [];
            float[] logits;
            if (imagePaths.Length == 0) logits = model.Forward(tokens);
            else
            {
                VisionConfig vision = config.Vision ?? throw new LlmBuildException(ErrorCodes.ImagePromptMismatch, $"model_type '{config.ModelType}' takes no images.");
                var pre = ImagePreprocessor.Load(dir, vision, 0);
                var warnings = new List<LlmBuildWarning>();
                var images = imagePaths.Select(p => pre.Process(p, warnings)).ToArray();
                foreach (var w in warnings) Console.Error.WriteLine($"warning {w}");
                var grids = images.Select(i => i.Grid).ToArray();
                float[] embeds = new ReferenceVisionTower(checkpoint, config).Encode(images.SelectMany(i => i.PixelValues).ToArray(), grids);
                logits = model.ForwardMultimodal(tokens, MropePositions.Compute(tokens, grids, vision).Positions, embeds);
            }
            int vocab = model.Config.VocabSize;
            bool allPositions = parse.GetValue(all);
            float[] result = allPositions ? logits : logits.AsSpan((tokens.Length - 1) * vocab, vocab).ToArray();
            NpyFile.WriteFloat32(parse.GetValue(output)!, result, [allPositions ? tokens.Length : 1, vocab]);
            return 0;
        });
        return command;
    }
}
