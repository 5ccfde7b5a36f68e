namespace LlmBuild.Core.BModel;

/// <summary>Finds and rewrites every <see cref="BinaryRef"/> of a model (coefficients, commands, IR, profiles, modules).</summary>
public static class BModelBinaries
{
    /// <summary>Every binary reference with a description of where it is, in a fixed order.</summary>
    public static IEnumerable<(string Where, BinaryRef Binary)> All(BModelFile model)
    {
        var found = new List<(string, BinaryRef)>();
        Map(model, (where, b) => { found.Add((where, b)); return b; });
        return found;
    }

    /// <summary>How <see cref="Map"/> names a stage's coefficient memory.</summary>
    public static string CoeffWhere(string net, int stage) => $"net '{net}' stage {stage} {CoeffSuffix}";

    /// <summary>True when <paramref name="where"/> (as <see cref="Map"/> names it) is a stage's coefficient memory.</summary>
    public static bool IsCoeffWhere(string where) => where.EndsWith(" " + CoeffSuffix, StringComparison.Ordinal);

    private const string CoeffSuffix = "coeff_mem";

    /// <summary>Returns a copy of <paramref name="model"/> with every binary reference replaced by <paramref name="map"/>'s result.</summary>
    public static BModelFile Map(BModelFile model, Func<string, BinaryRef, BinaryRef> map)
    {
        BinaryRef? Opt(string where, BinaryRef? b) => b is { } v ? map(where, v) : null;
        IReadOnlyList<BinaryRef> List(string where, IReadOnlyList<BinaryRef> list) =>
            list.Select((b, i) => map($"{where}[{i}]", b)).ToArray();
        IReadOnlyList<CmdGroup> Cmds(string where, IReadOnlyList<CmdGroup> groups) =>
            groups.Select((g, i) => g with
            {
                BinaryBdc = Opt($"{where}[{i}].binary_bdc", g.BinaryBdc),
                BinaryGdma = Opt($"{where}[{i}].binary_gdma", g.BinaryGdma),
            }).ToArray();

        return model with
        {
            KernelModule = model.KernelModule is { } k ? k with { Binary = map("kernel_module", k.Binary) } : null,
            CpuopModule = model.CpuopModule is { } c ? c with { Binary = map("cpuop_module", c.Binary) } : null,
            LibBackend = Opt("lib_backend", model.LibBackend),
            Nets = model.Nets.Select(net => net with
            {
                Stages = net.Stages.Select((p, si) =>
                {
                    string at = $"net '{net.Name}' stage {si}";
                    return p with
                    {
                        CoeffMem = p.CoeffMem is { } cm ? cm with { BinaryCoeff = Opt(CoeffWhere(net.Name, si), cm.BinaryCoeff) } : null,
                        CmdGroups = Cmds($"{at} cmd_group", p.CmdGroups),
                        NetProfile = Opt($"{at} net_profile", p.NetProfile),
                        BinaryIr = Opt($"{at} binary_ir", p.BinaryIr),
                        NetStat = Opt($"{at} net_stat", p.NetStat),
                        TensorLoc = Opt($"{at} tensor_loc", p.TensorLoc),
                        SubNets = p.SubNets.Select((s, ni) =>
                        {
                            string sub = $"{at} sub_net[{ni}]";
                            return s with
                            {
                                CmdGroups = Cmds($"{sub} cmd_group", s.CmdGroups),
                                CpuParams = s.CpuParams.Select((cp, ci) => cp with
                                {
                                    BinaryParam = Opt($"{sub} cpu_param[{ci}]", cp.BinaryParam),
                                    CpuConsts = cp.CpuConsts.Select((cc, k) => cc with { ConstData = Opt($"{sub} cpu_param[{ci}].cpu_const[{k}]", cc.ConstData) }).ToArray(),
                                }).ToArray(),
                                CoreCommands = s.CoreCommands.Select((core, ki) => core with
                                {
                                    GdmaTiuCommands = Cmds($"{sub} core[{ki}] gdma_tiu", core.GdmaTiuCommands),
                                    SdmaCommands = List($"{sub} core[{ki}] sdma", core.SdmaCommands),
                                    HauCommands = List($"{sub} core[{ki}] hau", core.HauCommands),
                                    CdmaCommands = List($"{sub} core[{ki}] cdma", core.CdmaCommands),
                                }).ToArray(),
                            };
                        }).ToArray(),
                    };
                }).ToArray(),
            }).ToArray(),
        };
    }
}
