# PEFM on EKS: VPC -> cluster (CPU + GPU node groups) -> cluster autoscaler -> Knative -> data
# -> monitoring.
provider "aws" {
  region = var.region
}

provider "kubernetes" {
  host                   = module.cluster.host
  cluster_ca_certificate = module.cluster.cluster_ca_certificate
  exec {
    api_version = module.cluster.exec_auth.api_version
    command     = module.cluster.exec_auth.command
    args        = module.cluster.exec_auth.args
  }
}

provider "helm" {
  kubernetes {
    host                   = module.cluster.host
    cluster_ca_certificate = module.cluster.cluster_ca_certificate
    exec {
      api_version = module.cluster.exec_auth.api_version
      command     = module.cluster.exec_auth.command
      args        = module.cluster.exec_auth.args
    }
  }
}

provider "kubectl" {
  host                   = module.cluster.host
  cluster_ca_certificate = module.cluster.cluster_ca_certificate
  load_config_file       = false
  exec {
    api_version = module.cluster.exec_auth.api_version
    command     = module.cluster.exec_auth.command
    args        = module.cluster.exec_auth.args
  }
}

module "vpc" {
  #checkov:skip=CKV_TF_1:A Terraform Registry module is pinned by its exact version; registry sources cannot name a commit hash.
  source  = "terraform-aws-modules/vpc/aws"
  version = "5.16.0"

  name               = var.cluster_name
  cidr               = "10.0.0.0/16"
  azs                = var.availability_zones
  private_subnets    = ["10.0.0.0/19", "10.0.32.0/19", "10.0.64.0/19"]
  public_subnets     = ["10.0.96.0/22", "10.0.100.0/22", "10.0.104.0/22"]
  enable_nat_gateway = true
  single_nat_gateway = true

  public_subnet_tags  = { "kubernetes.io/role/elb" = "1" }
  private_subnet_tags = { "kubernetes.io/role/internal-elb" = "1" }
}

module "cluster" {
  source = "../../modules/eks"

  cluster_name                 = var.cluster_name
  region                       = var.region
  vpc_id                       = module.vpc.vpc_id
  subnet_ids                   = module.vpc.private_subnets
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
}

# Scales the GPU node group up from 0 when a GPU revision is pending (and back down). The autoscaler's
# minor must be the cluster's: chart 9.59.0 runs cluster-autoscaler v1.35.0 (the module's default
# kubernetes_version 1.35); pick the chart of the matching appVersion when changing either.
resource "helm_release" "cluster_autoscaler" {
  name       = "cluster-autoscaler"
  repository = "https://kubernetes.github.io/autoscaler"
  chart      = "cluster-autoscaler"
  version    = "9.59.0"
  namespace  = "kube-system"

  values = [yamlencode({
    awsRegion     = var.region
    autoDiscovery = { clusterName = module.cluster.cluster_name }
    rbac          = { serviceAccount = { name = "cluster-autoscaler" } }
  })]
}

# EKS ships no default StorageClass: encrypted gp3 volumes for PostgreSQL and Prometheus.
resource "kubernetes_storage_class_v1" "gp3" {
  metadata {
    name        = "gp3"
    annotations = { "storageclass.kubernetes.io/is-default-class" = "true" }
  }
  storage_provisioner    = "ebs.csi.aws.com"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  parameters             = { type = "gp3", encrypted = "true" }
}

module "platform" {
  source = "../../modules/platform"

  platform             = module.cluster.platform
  gpu_node_selector    = module.cluster.gpu_node_selector
  gpu_node_taint       = module.cluster.gpu_node_taint
  domain               = var.domain
  deploy_cache         = var.deploy_cache
  managed_database_url = var.managed_database_url
  registry_username    = var.registry_username
  registry_token       = var.registry_token
  # A value, not depends_on: depends_on on a module defers every data source in it to apply time,
  # and the knative module's for_each over the release manifests would be unknown at plan
  # ("Invalid for_each argument" on the first plan). Referencing the StorageClass orders only the
  # resources that use it (the database and Prometheus volumes).
  storage_class = kubernetes_storage_class_v1.gp3.metadata[0].name
}
