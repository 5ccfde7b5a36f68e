using System.Diagnostics;
using LlmBuild.Core.BModel;

namespace LlmBuild.Integration.Tests;

/// <summary>
/// The build graph's promises (DESIGN §3), checked on real `dotnet build` runs of the example model:
/// no-op rebuilds, precise invalidation per option and per piece, kill -9 resume, clean, determinism.
/// One clean build is made once; each test works on a copy of it (write times preserved).
/// </summary>
[TestClass]
public sealed class IncrementalBuildTests
{
    [TestCleanup]
    public void DeleteTestDirectories() => BuildHarness.DeleteTestDirectories();

    private static string _baseline = "";
    private static SortedDictionary<string, string> _baselineHashes = new();

    [ClassInitialize]
    public static void BuildBaseline(TestContext _)
    {
        _baseline = BuildHarness.NewTempDirectory("baseline", keepUntilRunEnds: true);
        BuildHarness.WriteProject(_baseline, BuildHarness.DefaultProperties());
        BuildHarness.Build(_baseline).AssertSucceeded();
        _baselineHashes = Artifacts(_baseline);
    }

    /// <summary>Hashes of everything the stages produce (obj/…/llm and bin/).</summary>
    private static SortedDictionary<string, string> Artifacts(string dir)
    {
        var all = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in BuildHarness.HashTree(Path.Combine(dir, "obj", "Debug", "llm"))) all["obj/" + k] = v;
        foreach (var (k, v) in BuildHarness.HashTree(Path.Combine(dir, "bin"))) all["bin/" + k] = v;
        return all;
    }

    private static SortedDictionary<string, long> ArtifactTimes(string dir)
    {
        var all = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (var (k, v) in BuildHarness.TimeTree(Path.Combine(dir, "obj", "Debug", "llm"))) all["obj/" + k] = v;
        foreach (var (k, v) in BuildHarness.TimeTree(Path.Combine(dir, "bin"))) all["bin/" + k] = v;
        return all;
    }

    private static string CopyOfBaseline(string label)
    {
        string dir = BuildHarness.NewTempDirectory(label);
        BuildHarness.CopyTree(_baseline, dir);
        return dir;
    }

    private static void SetProperty(string dir, string name, string value)
    {
        var props = BuildHarness.DefaultProperties();
        props[name] = value;
        BuildHarness.WriteProject(dir, props);
    }

    [TestMethod]
    public void CleanBuildProducesTheBModelAndConfig()
    {
        Assert.IsTrue(File.Exists(Path.Combine(_baseline, "bin", "tiny.bmodel")), "bin/tiny.bmodel");
        foreach (string f in new[] { "config.json", "generation_config.json", "tokenizer_config.json", "vocab.json", "merges.txt" })
            Assert.IsTrue(File.Exists(Path.Combine(_baseline, "bin", "config", f)), "bin/config/" + f);
        Assert.IsFalse(File.Exists(Path.Combine(_baseline, "bin", "config", "model.safetensors")), "weights are not copied to config/");
        string llm = Path.Combine(_baseline, "obj", "Debug", "llm");
        foreach (string owner in new[] { "embedding", "block_0", "block_3" })
            Assert.IsTrue(File.Exists(Path.Combine(llm, "weights", owner + "_top_weights.npz")), owner);
        // The example ties lm_head to the embedding: the head reads the embedding's file, it has none of its own.
        Assert.IsFalse(File.Exists(Path.Combine(llm, "weights", "lm_head_top_weights.npz")), "a tied lm_head has no weight file");
        foreach (string piece in new[] { "embedding", "embedding_cache", "block_0", "block_cache_0", "block_3", "block_cache_3", "lm_head" })
        {
            Assert.IsTrue(File.Exists(Path.Combine(llm, "mlir", piece, piece + ".mlir")), piece + ".mlir");
            Assert.IsTrue(File.Exists(Path.Combine(llm, "bm1684x", piece + ".bmodel")), piece + ".bmodel");
        }
        Assert.IsFalse(Directory.EnumerateFiles(_baseline, "*.tmp", SearchOption.AllDirectories).Any(), "no temporaries left");
    }

    /// <summary>
    /// DESIGN §14: obj/ holds each weight byte once. The modules name their owner's weight file (block_i and
    /// block_cache_i the same one, lm_head the embedding's), mlir/ holds no weights, the piece bmodels reference their
    /// coefficients (a few KiB each), and obj/ is at most 1.3× the final bmodel.
    /// </summary>
    [TestMethod]
    public void ObjHoldsEachWeightByteOnce()
    {
        string llm = Path.Combine(_baseline, "obj", "Debug", "llm");
        long Size(string folder) => Directory.EnumerateFiles(Path.Combine(llm, folder), "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        long bmodel = new FileInfo(Path.Combine(_baseline, "bin", "tiny.bmodel")).Length;
        long weights = Size("weights"), mlir = Size("mlir"), pieces = Size("bm1684x"), obj = Size(".");
        string table = $"weights {weights}, mlir {mlir}, bm1684x {pieces}, obj {obj}, bmodel {bmodel}";
        Assert.IsFalse(Directory.EnumerateFiles(Path.Combine(llm, "mlir"), "*.npz", SearchOption.AllDirectories).Any(), "no weight file under mlir/: " + table);
        Assert.IsTrue(mlir < bmodel / 50, "mlir/ holds only modules: " + table);
        Assert.IsTrue(pieces < bmodel / 20, "piece bmodels hold no coefficients: " + table);
        Assert.IsTrue(weights < bmodel * 1.1, "the weights once: " + table);
        Assert.IsTrue(obj <= bmodel * 1.3, "obj/ ≤ 1.3× the bmodel: " + table);
        StringAssert.Contains(File.ReadAllText(Path.Combine(llm, "mlir", "block_cache_2", "block_cache_2.mlir")), "module.weight_file = \"../../weights/block_2_top_weights.npz\"");
        StringAssert.Contains(File.ReadAllText(Path.Combine(llm, "mlir", "lm_head", "lm_head.mlir")), "module.weight_file = \"../../weights/embedding_top_weights.npz\"");
        var references = LlmBuild.Core.Codegen.PieceCoeffReferences.TryRead(Path.Combine(llm, "bm1684x", "block_cache_2.bmodel"));
        Assert.IsNotNull(references, "block_cache_2.bmodel references its coefficients");
        Assert.AreEqual("../weights/block_2_top_weights.npz", references.WeightFile);
    }

    /// <summary>
    /// An owner file that changes behind the build's back (new bytes, the old time, so no stage looks out of date):
    /// combine finds the piece bmodels' references stale (LLMB0430), deletes the pieces that read the file and builds
    /// nothing from the old bytes; the next build compiles them from the current file.
    /// </summary>
    [TestMethod]
    public void StaleCoefficientReferencesAreRefusedAndRebuilt()
    {
        string dir = CopyOfBaseline("stale");
        string llm = Path.Combine(dir, "obj", "Debug", "llm");
        string owner = Path.Combine(llm, "weights", "block_1_top_weights.npz");
        DateTime time = File.GetLastWriteTimeUtc(owner);
        var props = BuildHarness.DefaultProperties().ToDictionary(kv => kv.Key, kv => (string?)kv.Value);
        props["Symmetric"] = "true";
        var symmetric = LlmBuild.Core.Stages.ResolveStage.Resolve(props, new List<LlmBuild.Core.Diagnostics.LlmBuildWarning>());
        using (var checkpoint = LlmBuild.Core.Stages.QuantizeStage.OpenSource(symmetric))
            LlmBuild.Core.Stages.QuantizeStage.Run(checkpoint, symmetric, "block_1", owner);
        File.SetLastWriteTimeUtc(owner, time);
        File.Delete(Path.Combine(dir, "bin", "tiny.bmodel"));

        var refused = BuildHarness.Build(dir);
        Assert.AreNotEqual(0, refused.ExitCode, refused.Output);
        StringAssert.Contains(refused.Output, "LLMB0430");
        Assert.IsFalse(File.Exists(Path.Combine(dir, "bin", "tiny.bmodel")), "no model from stale references");
        Assert.IsFalse(File.Exists(Path.Combine(llm, "bm1684x", "block_1.bmodel")), "block_1 deleted");
        Assert.IsFalse(File.Exists(Path.Combine(llm, "bm1684x", "block_cache_1.bmodel")), "block_cache_1 deleted");

        var rebuilt = BuildHarness.Build(dir, "-p:Verify=false");
        rebuilt.AssertSucceeded();
        CollectionAssert.AreEquivalent(new[] { "block_1", "block_cache_1" }, rebuilt.DonePieces.ToList(), rebuilt.Output);
        Assert.AreNotEqual(_baselineHashes["bin/tiny.bmodel"], Artifacts(dir)["bin/tiny.bmodel"], "built from the current weights");
    }

    /// <summary>NumDevice=2 through MSBuild: a split the model cannot take fails at resolve; one it can builds cascades and verifies.</summary>
    [TestMethod]
    public void TwoDeviceBuildSplitsBlocksAndVerifies()
    {
        string dir = CopyOfBaseline("tp");
        SetProperty(dir, "NumDevice", "2");
        var refused = BuildHarness.Build(dir);
        Assert.AreNotEqual(0, refused.ExitCode);
        StringAssert.Contains(refused.Output, "LLMB0201", "a device's o_proj share (32 columns) is not a whole 64-group");
        Assert.IsFalse(refused.RanTasks.Contains(Stages.Quantize), "refused before any weights are written");

        var props = BuildHarness.DefaultProperties();
        props["NumDevice"] = "2";
        props["QGroupSize"] = "32";
        BuildHarness.WriteProject(dir, props);
        var result = BuildHarness.Build(dir);
        result.AssertSucceeded();
        Assert.IsTrue(result.RanTasks.Contains(Stages.Verify), "verify ran on the two-device model:\n" + result.Output);
        using var bmodel = LlmBuild.Core.BModel.BModelReader.Read(Path.Combine(dir, "bin", "tiny.bmodel"));
        Assert.AreEqual(2u, bmodel.Model.DeviceNum);
        Assert.AreEqual(4 * 2 * 3 * 2, bmodel.Model.Nets.Count(n => n.Cascade is not null), "4 layers × (block, block_cache) × 3 steps × 2 devices");
        StringAssert.Contains(File.ReadAllText(Path.Combine(dir, "obj", "Debug", "llm", "verify.json")), "\"failures\": []");
    }

    [TestMethod]
    public void SecondBuildIsANoOp()
    {
        string dir = CopyOfBaseline("noop");
        var before = ArtifactTimes(dir);
        // The lock's guard file is created by any attempt to take the build lock: a no-op build makes none (issue 15).
        File.Delete(Path.Combine(dir, "obj", "llmbuild.lock.guard"));
        var result = BuildHarness.Build(dir);
        result.AssertSucceeded();
        CollectionAssert.IsSubsetOf(Stages.All, result.SkippedTargets.ToList(), "every stage skipped:\n" + result.Output);
        Assert.AreEqual(0, result.RanTasks.Count, "no stage task ran");
        CollectionAssert.AreEqual(before, ArtifactTimes(dir), "outputs untouched");
        Assert.IsFalse(File.Exists(Path.Combine(dir, "obj", "llmbuild.lock.guard")), "no build lock taken:\n" + result.Output);
        Assert.IsFalse(result.Output.Contains("Restored ", StringComparison.Ordinal), "nothing restored");
    }

    /// <summary>
    /// The SDK's content hash is cached in the user's data folder (issue 15: hashing the task assemblies was ~40 ms of
    /// every cold build): a build without obj/ finds it there and reads no task assembly; a cache that cannot be
    /// written is no error (the next build hashes again). The built bytes are the same either way.
    /// </summary>
    [TestMethod]
    public void ACleanBuildTakesTheSdkIdentityFromTheUsersCacheAndAnUnwritableCacheIsNoError()
    {
        string dir = CopyOfBaseline("sdkcache");
        string obj = Path.Combine(dir, "obj");
        string data = BuildHarness.NewTempDirectory("sdkcache-data");
        BuildResult Clean(string dataHome)
        {
            Directory.Delete(obj, recursive: true);
            Directory.Delete(Path.Combine(dir, "bin"), recursive: true);
            // Detailed output names each task that runs or is skipped (the harness's own flags say normal).
            var r = BuildHarness.Dotnet(dir, ["build", "model.llmproj", "-nologo", "-tl:off", "-v:d", "-nodeReuse:false"], buildFlags: false,
                environment: new Dictionary<string, string> { ["XDG_DATA_HOME"] = dataHome });
            r.AssertSucceeded();
            CollectionAssert.AreEqual(_baselineHashes, Artifacts(dir), "the cold build's bytes");
            return r;
        }
        const string Hashed = "Task \"GetFileHash\""; // detailed output names a task that runs, not one its condition skips

        var first = Clean(data);
        StringAssert.Contains(first.Output, Hashed, "an empty cache: the SDK files are hashed");
        string[] cached = Directory.GetFiles(Path.Combine(data, "LlmBuild", "sdk-identity"));
        Assert.AreEqual(1, cached.Length, string.Join(", ", cached));
        StringAssert.Matches(File.ReadAllText(cached[0]), new System.Text.RegularExpressions.Regex(@"^sdk-files=-?[0-9]+/-?[0-9]+ sha256=[0-9a-f]{64}\n$"));

        var second = Clean(data);
        Assert.IsFalse(second.Output.Contains(Hashed, StringComparison.Ordinal), "the user's cache serves a build without obj/:\n" + second.Output);

        string file = Path.Combine(data, "not-a-folder");
        File.WriteAllText(file, "");
        var third = Clean(file);
        StringAssert.Contains(third.Output, Hashed, "no cache: hashed");
        StringAssert.Contains(third.Output, "SDK identity not cached");
    }

    [TestMethod]
    public void ChangingSeqLengthRerunsExportOnwardAndQuantizesNothing()
    {
        string dir = CopyOfBaseline("seq");
        SetProperty(dir, "SeqLength", "96");
        var result = BuildHarness.Build(dir);
        result.AssertSucceeded();
        // The owners' files hold the RoPE tables (sized by SeqLength) beside the weights, as TPU-MLIR lays them out:
        // the quantize stage rewrites the block files' constants and copies their weights, quantizing nothing again.
        // The embedding's file has no constants: untouched.
        Assert.IsFalse(result.Output.Contains("embedding: weights unchanged", StringComparison.Ordinal), "embedding untouched:\n" + result.Output);
        for (int layer = 0; layer < 4; layer++)
            StringAssert.Contains(result.Output, $"block_{layer}: weights unchanged: kept in place, constants rewritten");
        foreach (string s in new[] { Stages.Resolve, Stages.Export, Stages.Compile, Stages.Combine, Stages.Verify })
            Assert.IsTrue(result.RanTasks.Contains(s), s + " ran");
        var after = Artifacts(dir);
        Assert.AreEqual(_baselineHashes["obj/weights/embedding_top_weights.npz"], after["obj/weights/embedding_top_weights.npz"]);
        Assert.AreNotEqual(_baselineHashes["bin/tiny.bmodel"], Artifacts(dir)["bin/tiny.bmodel"]);
        // Constants rewritten in place after the kept weights: the same bytes as a cold build at that SeqLength.
        string cold = BuildHarness.NewTempDirectory("seq-cold");
        SetProperty(cold, "SeqLength", "96");
        BuildHarness.Build(cold).AssertSucceeded();
        CollectionAssert.AreEqual(Artifacts(cold), after, "a SeqLength change gives the cold build's bytes");

        // The embedding's file is now older than the block owners' specs. Each owner is compared with its own spec, so the
        // next build is a no-op, not a quantize stage that finds every owner up to date on every build (issue 15).
        var again = BuildHarness.Build(dir);
        again.AssertSucceeded();
        Assert.AreEqual(0, again.RanTasks.Count, "no stage task ran after the change:\n" + again.Output);
    }

    [TestMethod]
    [DataRow("Quantize", "w8bf16")]
    [DataRow("QGroupSize", "32")]
    public void ChangingQuantizationRerunsQuantizeOnward(string property, string value)
    {
        string dir = CopyOfBaseline("quant");
        SetProperty(dir, property, value);
        var result = BuildHarness.Build(dir);
        result.AssertSucceeded();
        foreach (string s in Stages.All) Assert.IsTrue(result.RanTasks.Contains(s), s + " ran:\n" + result.Output);
        var after = Artifacts(dir);
        Assert.AreNotEqual(_baselineHashes["obj/weights/block_0_top_weights.npz"], after["obj/weights/block_0_top_weights.npz"]);
        // The embedding stays in the activation dtype: its weights do not change with the quantization of the linears.
        Assert.AreEqual(_baselineHashes["obj/weights/embedding_top_weights.npz"], after["obj/weights/embedding_top_weights.npz"]);
    }

    /// <summary>
    /// The SDK's extension points (as Grpc.Tools and NoTargets offer them): a project redefines an
    /// empty LlmBuildAfter&lt;Stage&gt; target after the SDK's import, CustomBeforeLlmBuildSdk sets a property the
    /// stages' evaluation sees, and a CustomAfterLlmBuildSdk file hooks another extension point with AfterTargets. Each
    /// runs once, between the stages it names; the artifacts do not change.
    /// </summary>
    [TestMethod]
    public void UsersHookTheStagesThroughTheExtensionPoints()
    {
        string dir = CopyOfBaseline("hooks");
        // One rebuilt owner makes quantize and export run, so their "running" lines order the hooks.
        File.Delete(Path.Combine(dir, "obj", "Debug", "llm", "weights", "block_1_top_weights.npz"));
        File.WriteAllText(Path.Combine(dir, "before.props"), """
            <Project>
              <PropertyGroup><HookProbe>seen-by-stages</HookProbe></PropertyGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(dir, "after.targets"), """
            <Project>
              <Target Name="ProbeAfterExport" AfterTargets="LlmBuildAfterExport">
                <Message Importance="high" Text="hook: after export ($(HookProbe))" />
              </Target>
            </Project>
            """);
        var props = BuildHarness.DefaultProperties();
        props["CustomBeforeLlmBuildSdk"] = "$(MSBuildProjectDirectory)/before.props";
        props["CustomAfterLlmBuildSdk"] = "$(MSBuildProjectDirectory)/after.targets";
        BuildHarness.WriteProject(dir, props, """
              <Target Name="LlmBuildAfterQuantize">
                <ItemGroup><_HookNpz Include="$(LlmWeightsDir)*_top_weights.npz" /></ItemGroup>
                <Message Importance="high" Text="hook: after quantize, @(_HookNpz->Count()) weight files" />
              </Target>
            """);
        var result = BuildHarness.Build(dir);
        result.AssertSucceeded();
        string o = result.Output;
        int quantize = o.IndexOf("QuantizeLlmWeights: running", StringComparison.Ordinal);
        // Five weight files: the example's tied lm_head reads the embedding's.
        int afterQuantize = o.IndexOf("hook: after quantize, 5 weight files", StringComparison.Ordinal);
        int export = o.IndexOf("ExportLlmMlir: running", StringComparison.Ordinal);
        int afterExport = o.IndexOf("hook: after export (seen-by-stages)", StringComparison.Ordinal);
        int compile = o.IndexOf("CompileLlmPieces: running", StringComparison.Ordinal);
        Assert.IsTrue(quantize >= 0 && quantize < afterQuantize && afterQuantize < export && export < afterExport && afterExport < compile,
            $"hooks run between their stages (quantize {quantize}, hook {afterQuantize}, export {export}, hook {afterExport}, compile {compile}):\n{o}");
        Assert.AreEqual(afterQuantize, o.LastIndexOf("hook: after quantize", StringComparison.Ordinal), "each hook runs once");
        CollectionAssert.AreEqual(_baselineHashes, Artifacts(dir), "hooks change no artifact");
    }

    [TestMethod]
    public void AnUpToDateWeightFileWithoutItsIdentityGetsItBack()
    {
        // What a kill between a weight file's rename and its identity's leaves: the file is newer than its spec (not
        // rerun) but has no identity. The next build that runs the quantize stage restores the sidecar of a cold build.
        string dir = CopyOfBaseline("identity");
        string weights = Path.Combine(dir, "obj", "Debug", "llm", "weights");
        File.Delete(Path.Combine(weights, "block_0_top_weights.npz.identity"));
        File.Delete(Path.Combine(weights, "block_1_top_weights.npz"));
        var result = BuildHarness.Build(dir);
        result.AssertSucceeded();
        StringAssert.Contains(result.Output, "block_0: identity of its up-to-date weight file restored");
        CollectionAssert.AreEqual(_baselineHashes, Artifacts(dir), "same bytes as the clean build, sidecars included");
    }

    [TestMethod]
    public void AMissingIdentityWithEveryWeightFileCurrentIsRestored()
    {
        // What a kill between the last weight file's rename and its identity's leaves: no owner is out of date, so only
        // the sidecars among the quantize target's Outputs make it run (a resumed SeqLength change lost one this way).
        string dir = CopyOfBaseline("identity-only");
        string weights = Path.Combine(dir, "obj", "Debug", "llm", "weights");
        File.Delete(Path.Combine(weights, "block_0_top_weights.npz.identity"));
        var result = BuildHarness.Build(dir);
        result.AssertSucceeded();
        StringAssert.Contains(result.Output, "block_0: identity of its up-to-date weight file restored");
        CollectionAssert.AreEqual(_baselineHashes, Artifacts(dir), "same bytes as the clean build, sidecars included");
        var again = BuildHarness.Build(dir);
        again.AssertSucceeded();
        Assert.AreEqual(0, again.RanTasks.Count, "the next build is a no-op:\n" + again.Output);
    }

    [TestMethod]
    public void DeletingOnePieceIntermediateRebuildsThatPieceOnly()
    {
        string dir = CopyOfBaseline("piece");
        string llm = Path.Combine(dir, "obj", "Debug", "llm");
        File.Delete(Path.Combine(llm, "weights", "block_1_top_weights.npz"));
        var before = ArtifactTimes(dir);
        var result = BuildHarness.Build(dir);
        result.AssertSucceeded();
        CollectionAssert.AreEquivalent(new[] { "block_1", "block_cache_1" }, result.DonePieces.ToList(),
            "only block_1's owner and its two pieces are rebuilt:\n" + result.Output);
        var after = ArtifactTimes(dir);
        var changed = after.Where(kv => !before.TryGetValue(kv.Key, out long t) || t != kv.Value).Select(kv => kv.Key).ToHashSet();
        foreach (string f in changed)
            Assert.IsTrue(f.Contains("block_1") || f.Contains("block_cache_1") || f.StartsWith("bin/") || f == "obj/verify.json", "unexpectedly rewritten: " + f);
        CollectionAssert.AreEqual(_baselineHashes, Artifacts(dir), "same bytes as the clean build");
    }

    [TestMethod]
    [DataRow("ResolveLlmConfig")]
    [DataRow("QuantizeLlmWeights")]
    [DataRow("ExportLlmMlir")]
    [DataRow("CompileLlmPieces")]
    [DataRow("CombineLlmBModel")]
    [DataRow("VerifyLlmBuild")]
    public void KilledBuildResumesToIdenticalBytes(string stage)
    {
        string dir = BuildHarness.NewTempDirectory("kill");
        BuildHarness.WriteProject(dir, BuildHarness.DefaultProperties());
        BuildAndKillIn(dir, stage);

        var resumed = BuildHarness.Build(dir);
        resumed.AssertSucceeded();
        CollectionAssert.AreEqual(_baselineHashes, Artifacts(dir), $"resumed build after a kill in {stage} equals the clean build");
        Assert.IsFalse(Directory.EnumerateFiles(dir, "*.tmp", SearchOption.AllDirectories).Any(f => f.Contains("/bin/")), "no temporaries in bin/");
    }

    [TestMethod]
    [DataRow("QuantizeLlmWeights")]
    [DataRow("CombineLlmBModel")]
    public void KilledSeqLengthChangeResumesToTheColdBuildsBytes(string stage)
    {
        // A SeqLength change rewrites the owners' constants in place after their weights (the file is moved aside
        // meanwhile): killed at any moment, the next build must still give the bytes of a cold build.
        string cold = BuildHarness.NewTempDirectory("seq-cold");
        SetProperty(cold, "SeqLength", "96");
        BuildHarness.Build(cold).AssertSucceeded();
        string dir = CopyOfBaseline("seq-kill");
        SetProperty(dir, "SeqLength", "96");
        BuildAndKillIn(dir, stage);
        BuildHarness.Build(dir).AssertSucceeded();
        CollectionAssert.AreEqual(Artifacts(cold), Artifacts(dir), $"resumed SeqLength change after a kill in {stage} equals the cold build");
    }

    /// <summary>Starts a build of <paramref name="dir"/> and kills its whole process group once <paramref name="stage"/> has started.</summary>
    private static void BuildAndKillIn(string dir, string stage)
    {
        // Its own process group (setsid), so the throttle and the kill reach the build, its nodes and its task hosts.
        var psi = BuildHarness.StartInfo(dir, ["build", "model.llmproj"]);
        psi.FileName = "setsid";
        psi.ArgumentList.Insert(0, "dotnet");
        using var process = Process.Start(psi)!;
        var seen = new ManualResetEventSlim();
        string marker = $"{stage}: running";
        var log = new System.Text.StringBuilder();
        void OnLine(string? line)
        {
            if (line is null) return;
            lock (log) log.AppendLine(line);
            if (line.Contains(marker, StringComparison.Ordinal)) seen.Set();
        }
        process.OutputDataReceived += (_, e) => OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        Assert.IsTrue(seen.Wait(TimeSpan.FromMinutes(5)), $"stage {stage} never started:\n{log}");
        Throttle(process.Id, TimeSpan.FromMilliseconds(stage == "ResolveLlmConfig" ? 300 : 400));
        // Kill the whole process group: the build, its nodes and its task hosts.
        using (var kill = Process.Start("kill", ["-9", "--", "-" + process.Id])) kill.WaitForExit();
        process.WaitForExit();
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SendSignal(int pid, int signal);

    private const int SignalContinue = 18, SignalStop = 19;

    /// <summary>
    /// The fault injection of the kill tests, kept out of the product: runs a process group at a tenth of its speed
    /// (stopped 45 ms, running 5 ms) for <paramref name="duration"/>, so the kill that follows lands while the stage
    /// that just started is part done. The group is left stopped; SIGKILL ends stopped processes too.
    /// </summary>
    private static void Throttle(int processGroup, TimeSpan duration)
    {
        var until = DateTime.UtcNow + duration;
        while (true)
        {
            SendSignal(-processGroup, SignalStop);
            Thread.Sleep(45);
            if (DateTime.UtcNow >= until) return;
            SendSignal(-processGroup, SignalContinue);
            Thread.Sleep(5);
        }
    }

    [TestMethod]
    public void DryRunPrintsTheResolvedConfigurationAndWritesNothing()
    {
        string dir = BuildHarness.NewTempDirectory("dry");
        BuildHarness.WriteProject(dir, BuildHarness.DefaultProperties());
        var result = BuildHarness.Build(dir, "-p:DryRun=true");
        result.AssertSucceeded();
        foreach (string expected in new[] { "family", "qwen2", "SeqLength", "Quantize", "w4bf16", "QGroupSize", "Chip", "bm1684x", "NumDevice", "DistributeStrategy",
                     "MaxInputLength", "UseHistoryKv", "ChunkLength", "AudioLength", "EmbeddingDisk", "embedding_cache", "block_cache_3", "lm_head",
                     "codegen backend: builtin (LlmCodegenBackend=builtin)" })
            StringAssert.Contains(result.Output, expected);
        Assert.IsFalse(Directory.Exists(Path.Combine(dir, "obj", "Debug", "llm")), "no llm intermediates");
        Assert.IsFalse(Directory.Exists(Path.Combine(dir, "bin")), "no outputs");
    }

    /// <summary>
    /// DESIGN §8: model_deploy.py on PATH selects the tpu-mlir backend when neither LlmCodegenBackend nor TpuMlirPath is
    /// set, the build says so (also in a dry run) and skips verify; LlmCodegenBackend=builtin overrides it. Switching the
    /// backend either way recompiles every piece and nothing before codegen.
    /// </summary>
    [TestMethod]
    public void ModelDeployOnPathSelectsTpuMlirAndBuiltinOverridesIt()
    {
        string dir = CopyOfBaseline("tpumlir");
        string llm = Path.Combine(dir, "obj", "Debug", "llm");
        // A stand-in model_deploy.py: records each call and "compiles" a piece by copying the baseline's bmodel of that
        // piece (combine needs real bmodels), so the combined bmodel must equal the baseline's.
        string stash = Path.Combine(dir, "stash");
        BuildHarness.CopyTree(Path.Combine(llm, "bm1684x"), stash);
        string toolDir = Path.Combine(dir, "fake-tpu-mlir");
        Directory.CreateDirectory(toolDir);
        string tool = Path.Combine(toolDir, "model_deploy.py"), calls = Path.Combine(toolDir, "calls.txt");
        File.WriteAllText(tool, $$"""
            #!/bin/sh
            echo "$*" >> "{{calls}}"
            while [ $# -gt 0 ]; do
              case "$1" in --mlir) mlir="$2" ;; --model) out="$2" ;; esac
              shift
            done
            cp "{{stash}}/$(basename "$mlir" .mlir).bmodel" "$out"
            """.Replace("\r\n", "\n"));
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(tool, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var path = new Dictionary<string, string> { ["PATH"] = toolDir + Path.PathSeparator + Environment.GetEnvironmentVariable("PATH") };
        int Calls() => File.Exists(calls) ? File.ReadAllLines(calls).Length : 0;
        var props = BuildHarness.DefaultProperties();
        props.Remove("LlmCodegenBackend");
        BuildHarness.WriteProject(dir, props);
        string detected = $"codegen backend: tpu-mlir (model_deploy.py found on PATH at {tool})";

        var dry = BuildHarness.Dotnet(dir, ["build", "model.llmproj", "-p:DryRun=true"], environment: path);
        dry.AssertSucceeded();
        StringAssert.Contains(dry.Output, detected);
        StringAssert.Matches(dry.Output, new System.Text.RegularExpressions.Regex(@"codegen backend\s+tpu-mlir\s*$", System.Text.RegularExpressions.RegexOptions.Multiline));
        Assert.AreEqual(0, Calls(), "a dry run runs nothing");

        var tpu = BuildHarness.Dotnet(dir, ["build", "model.llmproj"], environment: path);
        tpu.AssertSucceeded();
        StringAssert.Contains(tpu.Output, detected);
        int pieces = File.ReadAllLines(Path.Combine(llm, "pieces.txt")).Length;
        Assert.AreEqual(pieces, Calls(), "model_deploy.py ran once per piece:\n" + tpu.Output);
        foreach (string s in new[] { Stages.Quantize, Stages.Export })
            Assert.IsTrue(tpu.SkippedTargets.Contains(s), s + " skipped: the backend changes neither weights nor MLIR");
        Assert.IsFalse(tpu.RanTasks.Contains(Stages.Compile), "the built-in codegen did not run");
        Assert.IsFalse(tpu.RanTasks.Contains(Stages.Verify), "the emulator cannot verify silicon bmodels");
        StringAssert.Contains(tpu.Output, "VerifyLlmBuild skipped: the tpu-mlir backend builds silicon bmodels");
        Assert.AreEqual(_baselineHashes["bin/tiny.bmodel"], Artifacts(dir)["bin/tiny.bmodel"], "combine merged the tool's bmodels");
        string stamp = File.ReadAllText(Path.Combine(llm, "options.stamp"));
        StringAssert.Contains(stamp, "LlmCodegenBackend=tpu-mlir");
        StringAssert.Matches(stamp, new System.Text.RegularExpressions.Regex("^LlmBuildSdkHash=[0-9a-f]{16,}$", System.Text.RegularExpressions.RegexOptions.Multiline));

        var builtin = BuildHarness.Dotnet(dir, ["build", "model.llmproj", "-p:LlmCodegenBackend=builtin"], environment: path);
        builtin.AssertSucceeded();
        StringAssert.Contains(builtin.Output, "codegen backend: builtin (LlmCodegenBackend=builtin)");
        Assert.AreEqual(pieces, Calls(), "model_deploy.py did not run again");
        foreach (string s in new[] { Stages.Compile, Stages.Combine, Stages.Verify })
            Assert.IsTrue(builtin.RanTasks.Contains(s), s + " ran:\n" + builtin.Output);
        CollectionAssert.AreEqual(_baselineHashes, Artifacts(dir), "back to the built-in build's bytes");
    }

    /// <summary>
    /// An upgraded SDK whose files are all older than the existing outputs (package files keep their packing times)
    /// still rebuilds: its hash is in the options stamp and in every spec. The SDK is laid out as the package lays it
    /// out (Sdk/, targets/, tasks/net10.0/), copied with the repository's files and times.
    /// </summary>
    [TestMethod]
    public void AnotherSdkWithOlderFilesRerunsEveryStage()
    {
        string dir = CopyOfBaseline("sdkup");
        string sdk = Path.Combine(dir, "sdk");
        BuildHarness.CopyTree(Path.Combine(BuildHarness.RepoRoot, "build", "LlmBuild.Sdk", "Sdk"), Path.Combine(sdk, "Sdk"));
        BuildHarness.CopyTree(Path.Combine(BuildHarness.RepoRoot, "targets"), Path.Combine(sdk, "targets"));
        BuildHarness.CopyTree(Path.Combine(BuildHarness.RepoRoot, "src", "LlmBuild.Tasks", "bin", "Release", "net10.0", "sdk-tasks"), Path.Combine(sdk, "tasks", "net10.0"));
        string project = BuildHarness.WriteProject(dir, BuildHarness.DefaultProperties());
        File.WriteAllText(project, File.ReadAllText(project).Replace(Path.Combine(BuildHarness.RepoRoot, "build", "LlmBuild.Sdk", "Sdk"), Path.Combine(sdk, "Sdk")));

        var same = BuildHarness.Build(dir);
        same.AssertSucceeded();
        Assert.IsFalse(same.Output.Contains("building the task assembly from source"), "the copied task assembly is used");
        Assert.AreEqual(0, same.RanTasks.Count, "the same SDK elsewhere is the same SDK:\n" + same.Output);

        string stages = Path.Combine(sdk, "targets", "LlmBuild.Stages.targets");
        var time = File.GetLastWriteTimeUtc(stages);
        File.AppendAllText(stages, "<!-- the next version -->\n");
        File.SetLastWriteTimeUtc(stages, time);
        var upgraded = BuildHarness.Build(dir);
        upgraded.AssertSucceeded();
        foreach (string s in Stages.All) Assert.IsTrue(upgraded.RanTasks.Contains(s), s + " ran:\n" + upgraded.Output);
        Assert.AreEqual(_baselineHashes["bin/tiny.bmodel"], Artifacts(dir)["bin/tiny.bmodel"]);
    }

    /// <summary>
    /// Two builds of one project with different options at once (issue 15: the lock is taken only by a build with work,
    /// after it compared the options stamp without it): each succeeds, waits and fails with LLMB0050, or stops with
    /// LLMB0437 because the other rewrote the stamp meanwhile; none corrupts the other, and the next build gives the
    /// clean build's bytes.
    /// </summary>
    [TestMethod]
    public void TwoBuildsWithDifferentOptionsAtOnceNeverCorruptEachOther()
    {
        string dir = CopyOfBaseline("racing");
        var results = Task.WhenAll(
            Task.Run(() => BuildHarness.Build(dir, "-p:SeqLength=96")),
            Task.Run(() => BuildHarness.Build(dir))).GetAwaiter().GetResult();
        foreach (BuildResult r in results)
            Assert.IsTrue(r.ExitCode == 0 || r.Output.Contains("error LLMB0437", StringComparison.Ordinal) || r.Output.Contains("error LLMB0050", StringComparison.Ordinal),
                "succeeded or stopped with a coded error:\n" + r.Output);
        Assert.IsFalse(File.Exists(Path.Combine(dir, "obj", "llmbuild.lock")), "the lock is released");

        var after = BuildHarness.Build(dir);
        after.AssertSucceeded();
        CollectionAssert.AreEqual(_baselineHashes, Artifacts(dir), "the clean build's bytes:\n" + string.Join("\n-----\n", results.Select(r => r.Output)));
    }

    [TestMethod]
    public void TwoCleanBuildsAreByteIdentical()
    {
        string dir = BuildHarness.NewTempDirectory("again");
        BuildHarness.WriteProject(dir, BuildHarness.DefaultProperties());
        BuildHarness.Build(dir).AssertSucceeded();
        CollectionAssert.AreEqual(_baselineHashes, Artifacts(dir));
    }

    [TestMethod]
    public void CleanRemovesEverythingTheBuildMade()
    {
        string dir = CopyOfBaseline("clean");
        BuildHarness.Build(dir).AssertSucceeded(); // records FileWrites in this folder's own paths
        BuildHarness.Dotnet(dir, ["clean", "model.llmproj"]).AssertSucceeded();
        Assert.AreEqual(0, Artifacts(dir).Count, "obj/…/llm and bin/ are empty after clean: " + string.Join(", ", Artifacts(dir).Keys));
    }
}
