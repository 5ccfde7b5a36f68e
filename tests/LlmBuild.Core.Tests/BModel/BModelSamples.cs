using System.Text.Json;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Tests.BModel;

/// <summary>Small bmodels shaped like LlmBuild's pieces, with every kind of field set, for the tests.</summary>
internal static class BModelSamples
{
    public static byte[] Bytes(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    public static BModelTensor Tensor(string name, BModelDataType type, params long[] shape) => new()
    {
        Name = name,
        DataType = type,
        Shapes = [shape],
        Size = (ulong)(shape.Aggregate(1L, (a, d) => a * d) * Math.Max(1, BModelDataTypes.Bits(type) / 8)),
    };

    /// <summary>One net with one stage: coefficients (shared by <paramref name="weightSeed"/>), a command group, a subnet.</summary>
    public static (BModelFile Model, BModelBlobBuilder Blob) Piece(string net, int seqLength, int weightSeed, string chip = "BM1684X", int addrMode = 0)
    {
        var blob = new BModelBlobBuilder();
        var coeff = blob.AddCoeff(Bytes(1000, weightSeed), address: 0x1_0000_0000,
            locations: [new CoeffLocation("q_proj.weight", 0, 600), new CoeffLocation("k_proj.weight", 640, 360)]);
        var bdc = blob.Add(Bytes(96 + seqLength, 7 + seqLength));
        var gdma = blob.Add(Bytes(128 + seqLength, 11 + seqLength));
        var cmd = new CmdGroup { BdcNum = 3, GdmaNum = 2, BinaryBdc = bdc, BinaryGdma = gdma, BdcCmdByte = (uint)(96 + seqLength), GdmaCmdByte = (uint)(128 + seqLength) };
        var stage = new NetParameter
        {
            InputTensors =
            [
                Tensor("input_states", BModelDataType.BFloat16, 1, seqLength, 64) with { DeviceAddr = 0x2_0000_0000 },
                Tensor("position_ids", BModelDataType.Int32, 1, seqLength) with { DeviceAddr = 0x2_0000_1000 },
                Tensor("attention_mask", BModelDataType.BFloat16, 1, 1, seqLength, seqLength) with { DeviceAddr = 0x2_0000_2000 },
            ],
            OutputTensors =
            [
                Tensor("output_states", BModelDataType.BFloat16, 1, seqLength, 64) with { Scale = 0.5f, ZeroPoint = -3 },
                Tensor("k_cache", BModelDataType.BFloat16, 1, seqLength, 2, 16),
            ],
            CtxAddr = 0x2_0000_0000,
            CtxSize = (ulong)(4096 * seqLength),
            CoeffMem = coeff,
            CmdGroups = [cmd],
            SubNets = [new SubNet { SubnetMode = 0, CmdGroups = [cmd], Id = 0, NextSubnetIds = [-1] }],
            CtxSizes = [(ulong)(4096 * seqLength)],
            CoreNum = 1,
        };
        var model = new BModelFile
        {
            Chip = chip,
            Time = "fixed-time",
            Nets = [new NetInfo { Name = net, Stages = [stage], AddrMode = addrMode }],
            NeuronSize = stage.CtxSize,
            DeviceNum = 1,
            KernelModule = new KernelModule("libbm1684x_kernel_module.so", blob.Add(Bytes(300, 99))),
        };
        return (model, blob);
    }

    /// <summary>A model using the rarely used tables too (cascade, cpu subnets, merge/switch, core commands, stage IR).</summary>
    public static (BModelFile Model, BModelBlobBuilder Blob) Everything()
    {
        var (model, blob) = Piece("block_0", 8, 1);
        var b1 = blob.Add(Bytes(40, 1001));
        var b2 = blob.Add(Bytes(56, 1002));
        var stage = model.Nets[0].Stages[0] with
        {
            IsDynamic = true,
            NDynamic = 1,
            HWDynamic = 2,
            NetProfile = b1,
            BinaryIr = b2,
            NetStat = b1,
            TensorLoc = b2,
            StageIrs = [new StageIr(12, 1, 2, 3, -4)],
            CpuMemSize = 77,
            IoAddr = 5, IoSize = 6, DynamicCtxAddr = 7, DynamicCoeffOffset = 8, DynamicCombinedCoeffOffset = 9,
            SubNets =
            [
                new SubNet
                {
                    SubnetMode = 1,
                    CpuParams = [new CpuParam { OpType = 4, BinaryParam = b1, IsCustom = 1, CpuConsts = [new CpuConst("c0", b2, [1, 2, 3]), new CpuConst(null, null, [])] }],
                    InputTensors = [Tensor("sub_in", BModelDataType.Float32, 2, 3) with { Shapes = [[2, 3], [4, 3]], MemType = 2, CpuAddr = 9, PadH = 10, Hidden = 1, Index = 2, GmemStmode = -1 }],
                    OutputTensors = [Tensor("sub_out", BModelDataType.Float16, 6)],
                    IsDynamic = 1, IrOffset = 3, IrLen = 4, NDynamic = 1, HWDynamic = 1, Id = 5,
                    NextSubnetIds = [6, -1],
                    MergeParam = new MergeParam([[0, 1], [], [2]]),
                    SwitchParam = new SwitchParam([1, 0], [0, 1]),
                    CoreCommands = [new CoreCommands { GdmaTiuCommands = [new CmdGroup { BdcNum = 1, BinaryBdc = b1 }], SdmaCommands = [b1, b2], HauCommands = [b2], CdmaCommands = [b1] }],
                },
            ],
        };
        model = model with
        {
            Nets = [model.Nets[0] with { Stages = [stage], Cascade = new Cascade(1, 2, "main"), AddrMode = 1 }],
            CpuopModule = new KernelModule("libcpuop.so", b2),
            BModelType = 1,
            LibBackend = b1,
            DeviceNum = 2,
        };
        return (model, blob);
    }

    /// <summary>A canonical text form of a model, for equality checks (records hold lists, compared by reference).</summary>
    public static string Dump(BModelFile model) => JsonSerializer.Serialize(model, new JsonSerializerOptions { WriteIndented = true });
}
