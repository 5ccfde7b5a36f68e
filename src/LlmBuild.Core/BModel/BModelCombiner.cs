using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.BModel;

/// <summary>What a combine produced.</summary>
public sealed record BModelCombineResult(
    int Nets, int Stages, int UniqueBinaries, ulong UniqueBytes, int DedupedBinaries, ulong DedupedBytes, long OutputBytes);

/// <summary>
/// Merges piece bmodels into one, as <c>model_tool --combine</c> does: nets keep their first-seen order; a net name
/// seen again becomes another stage of that net once its inputs and outputs are checked to match (same names, types
/// and scales; different shapes); every binary is copied into one blob where byte-identical binaries are stored once
/// (block_i and block_cache_i share their weights).
/// </summary>
public static class BModelCombiner
{
    /// <param name="createTime">The combined model's time string; null keeps the first input's (never the wall clock).</param>
    /// <param name="externals">Per input, the coefficient payloads it references instead of holding (keyed by
    /// <see cref="BModelBinaries.CoeffWhere"/>), streamed into the output; null or a null entry: the input holds them.</param>
    public static BModelCombineResult Combine(IReadOnlyList<string> inputPaths, string outputPath, string? createTime = null,
        IReadOnlyList<IReadOnlyDictionary<string, ExternalPayload>?>? externals = null)
    {
        if (inputPaths.Count == 0) throw new LlmBuildException(ErrorCodes.BModelInvalid, "Nothing to combine: no input bmodels were given.");
        var inputs = new List<BModelContainer>();
        try
        {
            foreach (string path in inputPaths) inputs.Add(BModelReader.Read(path));
            var (model, blob) = Merge(inputs, createTime, externals);
            byte[] flatBuffer = BModelWriter.BuildFlatBuffer(model, blob);
            long expectedBytes = BModelHeader.Size + flatBuffer.LongLength + (long)blob.Length;
            CheckAgainstUniqueParts(inputs, blob, expectedBytes, outputPath);
            if (CanKeepCoefficients(outputPath, model, blob, flatBuffer)) BModelWriter.RewriteFile(outputPath, flatBuffer, blob);
            else BModelWriter.WriteFile(outputPath, flatBuffer, blob);
            long written = new FileInfo(outputPath).Length;
            if (written != expectedBytes)
                throw new LlmBuildException(ErrorCodes.WriteFailed, $"'{outputPath}' is {written} bytes after writing, expected {expectedBytes}; check the disk and rebuild.", outputPath);
            return new BModelCombineResult(model.Nets.Count, model.Nets.Sum(n => n.Stages.Count), blob.UniqueCount, blob.UniqueBytes,
                blob.DedupedCount, blob.DedupedBytes, written);
        }
        finally
        {
            foreach (var c in inputs) c.Dispose();
        }
    }

    /// <summary>
    /// The reference checks the combined size against the sizes of the pieces whose weights are not shared. Here
    /// the bound is exact: headers and flatbuffers of the inputs, plus each distinct binary once, plus alignment.
    /// </summary>
    private static void CheckAgainstUniqueParts(IReadOnlyList<BModelContainer> inputs, BModelBlobBuilder blob, long outputBytes, string outputPath)
    {
        long metadata = inputs.Sum(c => (long)c.Header.HeaderSize + c.Header.FlatBufferSize);
        long bound = metadata + (long)blob.UniqueBytes + (long)blob.UniqueCount * (blob.Alignment - 1) + (long)blob.Leading;
        if (outputBytes > bound)
            throw new LlmBuildException(ErrorCodes.BModelCombineTooLarge,
                $"The combined bmodel '{outputPath}' would be {outputBytes} bytes, more than its unique parts ({bound} bytes: " +
                $"{blob.UniqueCount} distinct binaries of {blob.UniqueBytes} bytes plus {metadata} bytes of headers and flatbuffers); weights were not deduplicated.", outputPath);
    }

    /// <summary>
    /// True when the bmodel already at <paramref name="path"/> holds exactly the coefficient region the new one needs —
    /// the same coefficient binaries (file offset, size, sha256 check code) with zeros between them — so only the header,
    /// flatbuffer and what follows the region are written again (<see cref="BModelWriter.RewriteFile"/>): what a SeqLength
    /// change, which changes shapes and commands but no coefficient, needs. The region's bytes are trusted by the old
    /// file's own check codes (it was written whole and renamed into place, or rewritten the same way); the gaps are
    /// read. A file with other links is never changed in place (it would change the other names too), nor one this
    /// process cannot count the links of, nor one a reader has open (as far as the file's advisory lock tells: .NET
    /// readers take it, other programs may not). Anything unreadable or different: false, and the file is written whole.
    /// </summary>
    private static bool CanKeepCoefficients(string path, BModelFile model, BModelBlobBuilder blob, byte[] flatBuffer)
    {
        if (blob.LeadingRegionEnd is not { } regionEnd || regionEnd == blob.Leading) return false;
        if (!File.Exists(path) || IO.HardLinks.Count(path) != 1) return false;
        long blobStart = BModelHeader.Size + flatBuffer.LongLength;
        var wanted = Coefficients(model, blobStart, b => blob.Sha256(b));
        if (wanted is null) return false;
        try
        {
            // A reader that has the file open (the emulator, a server) holds a shared lock on it; changed in place, the
            // bytes would change under it. Written anew, it keeps its file.
            using (new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.None)) { }
        }
        catch (IOException)
        {
            return false;
        }
        try
        {
            using var old = BModelReader.Read(path);
            long oldBlobStart = old.FileLength - old.BlobLength;
            var checkCodes = new Dictionary<BinaryRef, byte[]>();
            foreach (var stage in old.Model.Nets.SelectMany(n => n.Stages))
                if (stage.CoeffMem is { BinaryCoeff: { } b } coeff) checkCodes.TryAdd(b, coeff.CheckCode.ToArray());
            var have = Coefficients(old.Model, oldBlobStart, b => checkCodes[b]);
            if (have is null || !have.SequenceEqual(wanted)) return false;
            // Every other binary of the old file lies after the region (or inside one of its coefficients): its layout is this one.
            long start = blobStart + (long)blob.Leading, end = blobStart + (long)regionEnd;
            foreach (var (where, b) in BModelBinaries.All(old.Model))
            {
                if (b.Size == 0 || BModelBinaries.IsCoeffWhere(where)) continue;
                long at = oldBlobStart + (long)b.Start;
                if (at < end && !have.Any(c => c.Offset <= at && at + (long)b.Size <= c.Offset + c.Size)) return false;
            }
            // The gaps between the coefficients, and up to the region's end, are zeros.
            long pos = start;
            foreach (var (offset, size, _) in have.Append((end, 0L, "")))
            {
                if (offset < pos) return false;
                if (offset > pos && old.GetSpan(new BinaryRef((ulong)(pos - oldBlobStart), (ulong)(offset - pos))).ContainsAnyExcept((byte)0)) return false;
                pos = offset + size;
            }
            return pos == end;
        }
        catch (LlmBuildException)
        {
            return false;
        }
    }

    /// <summary>The distinct coefficient binaries of a model as (file offset, size, sha256 hex), in file order; null when one has no check code.</summary>
    private static List<(long Offset, long Size, string Sha256)>? Coefficients(BModelFile model, long blobStart, Func<BinaryRef, byte[]> sha256)
    {
        var found = new SortedDictionary<long, (long Offset, long Size, string Sha256)>();
        foreach (var (where, b) in BModelBinaries.All(model))
        {
            if (!BModelBinaries.IsCoeffWhere(where) || b.Size == 0) continue;
            long at = blobStart + (long)b.Start;
            byte[] sha = sha256(b);
            if (sha.Length != 32) return null;
            var c = (at, (long)b.Size, Convert.ToHexString(sha));
            if (found.TryGetValue(at, out var seen) && seen != c) return null; // two sizes at one offset: not this layout
            found[at] = c;
        }
        return found.Values.ToList();
    }

    /// <summary>Merges opened bmodels into one model and the blob it refers to (the inputs must stay open until written).</summary>
    public static (BModelFile Model, BModelBlobBuilder Blob) Merge(IReadOnlyList<BModelContainer> inputs, string? createTime = null,
        IReadOnlyList<IReadOnlyDictionary<string, ExternalPayload>?>? externals = null)
    {
        if (externals is not null && externals.Count != inputs.Count)
            throw new ArgumentException($"{externals.Count} external payload tables for {inputs.Count} inputs.", nameof(externals));
        if (inputs.Count == 0) throw new LlmBuildException(ErrorCodes.BModelInvalid, "Nothing to combine: no input bmodels were given.");
        var first = inputs[0];
        var blob = new BModelBlobBuilder();
        var nets = new List<(NetInfo Net, List<NetParameter> Stages, List<string> From)>();
        var byName = new Dictionary<string, int>(StringComparer.Ordinal);
        KernelModule? kernel = null, cpuop = null;
        BinaryRef? libBackend = null;
        uint deviceNum = 0;
        ulong neuronSize = 0;

        foreach (var input in inputs)
            if (!string.Equals(input.Model.Chip, first.Model.Chip, StringComparison.Ordinal))
                throw new LlmBuildException(ErrorCodes.BModelCombineConflict,
                    $"Cannot combine '{input.Name}' (chip {input.Model.Chip}) with '{first.Name}' (chip {first.Model.Chip}); build every piece for the same chip.", input.Name);
        // Coefficients first, in the inputs' order, then everything else (commands, modules): the coefficient region's
        // place and layout depend on the coefficients alone (see Place), so a change of shapes or commands only rewrites
        // what follows it and the flatbuffer before it.
        var mapped = new BModelFile[inputs.Count];
        for (int i = 0; i < inputs.Count; i++)
        {
            var input = inputs[i];
            var streamed = externals?[i];
            var copied = new Dictionary<BinaryRef, BinaryRef>();
            mapped[i] = BModelBinaries.Map(input.Model, (where, b) =>
            {
                if (!BModelBinaries.IsCoeffWhere(where)) return b;
                // A referenced coefficient memory: its bytes are streamed from the weight file, in this same order.
                if (streamed is not null && streamed.TryGetValue(where, out var payload)) return blob.AddExternal(payload);
                if (!copied.TryGetValue(b, out var to)) copied[b] = to = blob.Add(input.GetMemory(b));
                return to;
            });
        }
        blob.EndLeadingRegion();
        for (int i = 0; i < inputs.Count; i++)
        {
            var input = inputs[i];
            var copied = new Dictionary<BinaryRef, BinaryRef>();
            var model = BModelBinaries.Map(mapped[i], (where, b) =>
            {
                if (BModelBinaries.IsCoeffWhere(where)) return b;
                if (!copied.TryGetValue(b, out var to)) copied[b] = to = blob.Add(input.GetMemory(b));
                return to;
            });
            kernel ??= model.KernelModule;
            cpuop ??= model.CpuopModule;
            libBackend ??= model.LibBackend;
            deviceNum = Math.Max(deviceNum, model.DeviceNum);
            foreach (var net in model.Nets)
            {
                if (net.Stages.Count == 0) continue;
                foreach (var stage in net.Stages) neuronSize = Math.Max(neuronSize, stage.CtxSize);
                if (!byName.TryGetValue(net.Name, out int index))
                {
                    byName[net.Name] = nets.Count;
                    nets.Add((net, net.Stages.ToList(), Enumerable.Repeat(input.Name, net.Stages.Count).ToList()));
                    continue;
                }
                var existing = nets[index];
                if (existing.Net.AddrMode != net.AddrMode)
                    throw Conflict(net.Name, existing.From[0], input.Name, $"addr_mode {existing.Net.AddrMode} vs {net.AddrMode}");
                foreach (var stage in net.Stages)
                {
                    for (int s = 0; s < existing.Stages.Count; s++)
                        CheckStages(net.Name, existing.Stages[s], existing.From[s], stage, input.Name);
                    existing.Stages.Add(stage);
                    existing.From.Add(input.Name);
                }
            }
        }

        var merged = new BModelFile
        {
            Type = first.Model.Type,
            Version = first.Model.Version,
            Time = createTime ?? first.Model.Time,
            Chip = first.Model.Chip,
            Nets = nets.Select(n => n.Net with { Stages = n.Stages.ToArray() }).ToArray(),
            NeuronSize = neuronSize,
            KernelModule = kernel,
            DeviceNum = deviceNum,
            CpuopModule = cpuop,
            LibBackend = libBackend,
        };
        return (Place(merged, blob), blob);
    }

    /// <summary>
    /// Where the coefficient region starts in a combined bmodel's file: the end of the header and flatbuffer rounded up
    /// to this, so a flatbuffer that changes by a little (or not at all: a SeqLength change only changes numbers in it)
    /// leaves the region where it was.
    /// </summary>
    public const int CoefficientRegionAlignment = 64 << 10;

    /// <summary>
    /// Moves the blob's payloads so the coefficient region starts at a file offset that is a multiple of
    /// <see cref="CoefficientRegionAlignment"/> (zeros between the flatbuffer and the region), and the model's references
    /// with them. The flatbuffer's size does not depend on the offsets it holds (fixed-width structs), so it is measured once.
    /// </summary>
    private static BModelFile Place(BModelFile model, BModelBlobBuilder blob)
    {
        long blobStart = BModelHeader.Size + BModelWriter.BuildFlatBuffer(model, blob).LongLength;
        ulong lead = (ulong)(AlignUp(blobStart, CoefficientRegionAlignment) - blobStart);
        blob.Shift(lead);
        var placed = BModelBinaries.Map(model, (_, b) => BModelBlobBuilder.Shifted(b, lead));
        long after = BModelHeader.Size + BModelWriter.BuildFlatBuffer(placed, blob).LongLength;
        if (after != blobStart)
            throw new LlmBuildException(ErrorCodes.BModelInvalid, $"The combined flatbuffer changed size from {blobStart - BModelHeader.Size} to {after - BModelHeader.Size} bytes when its binaries moved; this is a bug in LlmBuild's bmodel writer.");
        return placed;
    }

    private static long AlignUp(long v, long alignment) => (v + alignment - 1) / alignment * alignment;

    private static LlmBuildException Conflict(string net, string fileA, string fileB, string what) =>
        new(ErrorCodes.BModelCombineConflict,
            $"Net '{net}' appears in '{fileA}' and '{fileB}' but the two cannot be stages of one net: {what}. Rebuild the pieces from the same graph.", fileB);

    /// <summary>Two stages of one net must agree on everything but their input shapes, which must differ.</summary>
    private static void CheckStages(string net, NetParameter a, string fileA, NetParameter b, string fileB)
    {
        if (a.IsDynamic != b.IsDynamic) throw Conflict(net, fileA, fileB, "one stage is dynamic, the other static");
        if (a.NDynamic != b.NDynamic || a.HWDynamic != b.HWDynamic) throw Conflict(net, fileA, fileB, "their dynamic flags differ");
        if ((a.SubNets.Count > 1) != (b.SubNets.Count > 1)) throw Conflict(net, fileA, fileB, "one has several subnets, the other one");
        CheckTensors(net, "input", a.InputTensors, fileA, b.InputTensors, fileB, compareScale: true);
        CheckTensors(net, "output", a.OutputTensors, fileA, b.OutputTensors, fileB, compareScale: false);
        bool sameShapes = a.InputTensors.Zip(b.InputTensors).All(p => p.First.Shapes.Count == p.Second.Shapes.Count
            && p.First.Shapes.Zip(p.Second.Shapes).All(s => s.First.SequenceEqual(s.Second)));
        if (sameShapes) throw Conflict(net, fileA, fileB, "their input shapes are identical, so the second stage would never be chosen (a piece given twice?)");
    }

    private static void CheckTensors(string net, string kind, IReadOnlyList<BModelTensor> a, string fileA, IReadOnlyList<BModelTensor> b, string fileB, bool compareScale)
    {
        if (a.Count != b.Count) throw Conflict(net, fileA, fileB, $"{a.Count} vs {b.Count} {kind}s");
        for (int i = 0; i < a.Count; i++)
        {
            var (x, y) = (a[i], b[i]);
            if (x.Name != y.Name) throw Conflict(net, fileA, fileB, $"{kind} {i} is '{x.Name}' vs '{y.Name}'");
            if (x.DataType != y.DataType)
                throw Conflict(net, fileA, fileB, $"{kind} '{x.Name}' is {BModelDataTypes.Name(x.DataType)} vs {BModelDataTypes.Name(y.DataType)}");
            if (compareScale && BitConverter.SingleToInt32Bits(x.Scale) != BitConverter.SingleToInt32Bits(y.Scale))
                throw Conflict(net, fileA, fileB, $"{kind} '{x.Name}' has scale {x.Scale} vs {y.Scale}");
            if (x.Shapes.Count != y.Shapes.Count) throw Conflict(net, fileA, fileB, $"{kind} '{x.Name}' has {x.Shapes.Count} vs {y.Shapes.Count} shapes");
        }
    }
}
