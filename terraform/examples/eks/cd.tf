# Optional: the trust GitHub Actions needs to deploy (aws-actions/configure-aws-credentials with
# role-to-assume, then `aws eks update-kubeconfig`). Set github_repository to create it:
# - the account's OIDC provider for token.actions.githubusercontent.com (one per account: pass
#   github_oidc_provider_arn when it exists already),
# - a role that only tokens of that repository's jobs in environment github_environment can assume
#   (sub = repo:OWNER/NAME:environment:ENV, aud = sts.amazonaws.com), allowed eks:DescribeCluster,
# - an EKS access entry mapping the role to the Kubernetes group pefm-cd, which modules/cd-access
#   makes admin of namespace pefm (and lets it set knative-serving/config-features).
# The API endpoint must also admit the runner: add its egress range to endpoint_public_access_cidrs
# (or run CD on a self-hosted runner inside the VPC).
locals {
  github_cd         = var.github_repository != null
  github_oidc_url   = "token.actions.githubusercontent.com"
  github_subject    = "repo:${coalesce(var.github_repository, "-")}:environment:${var.github_environment}"
  github_cd_group   = "pefm-cd"
  oidc_provider_arn = local.github_cd ? coalesce(var.github_oidc_provider_arn, try(aws_iam_openid_connect_provider.github[0].arn, "")) : null
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

resource "aws_iam_openid_connect_provider" "github" {
  count          = local.github_cd && var.github_oidc_provider_arn == null ? 1 : 0
  url            = "https://${local.github_oidc_url}"
  client_id_list = ["sts.amazonaws.com"]
}

data "aws_iam_policy_document" "github_trust" {
  count = local.github_cd ? 1 : 0
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [local.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_url}:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_url}:sub"
      values   = [local.github_subject]
    }
  }
}

resource "aws_iam_role" "github_cd" {
  count                = local.github_cd ? 1 : 0
  name                 = "${var.cluster_name}-github-cd"
  assume_role_policy   = data.aws_iam_policy_document.github_trust[0].json
  max_session_duration = 21600 # the CD workflow asks for 6 h sessions (role-duration-seconds)
}

data "aws_iam_policy_document" "github_cd" {
  count = local.github_cd ? 1 : 0
  statement {
    actions   = ["eks:DescribeCluster"]
    resources = ["arn:${data.aws_partition.current.partition}:eks:${var.region}:${data.aws_caller_identity.current.account_id}:cluster/${module.cluster.cluster_name}"]
  }
}

resource "aws_iam_role_policy" "github_cd" {
  count  = local.github_cd ? 1 : 0
  name   = "describe-cluster"
  role   = aws_iam_role.github_cd[0].id
  policy = data.aws_iam_policy_document.github_cd[0].json
}

resource "aws_eks_access_entry" "github_cd" {
  count             = local.github_cd ? 1 : 0
  cluster_name      = module.cluster.cluster_name
  principal_arn     = aws_iam_role.github_cd[0].arn
  type              = "STANDARD"
  kubernetes_groups = [local.github_cd_group]
}

module "cd_access" {
  source = "../../modules/cd-access"
  count  = local.github_cd ? 1 : 0

  subject_kind      = "Group"
  subject_name      = local.github_cd_group
  app_namespace     = module.platform.namespace
  flagger_namespace = module.platform.flagger_namespace
  depends_on        = [module.platform] # knative-serving exists once the platform is in
}
